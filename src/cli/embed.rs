//! `cxr embed`: the model's unit embeddings of texts and images as JSON lines, for programs
//! that analyse the shared space themselves (probes, projections, plots).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::{embed_files, load_model, ModelArgs};

#[derive(Args)]
pub(crate) struct EmbedArgs {
    /// Image files or folders (walked recursively).
    images: Vec<PathBuf>,
    /// A text to embed; repeat for more.
    #[arg(long = "text", value_name = "TEXT")]
    texts: Vec<String>,
    /// Texts to embed, one per line, from FILE or `-` (stdin); blank lines are skipped.
    #[arg(long = "texts-from", value_name = "FILE")]
    texts_from: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Images per inference batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

/// Prints `{"text": ..., "embedding": [...]}` per text, then `{"image": ..., "embedding":
/// [...]}` per image, in the order given. An image that cannot be read is reported on stderr
/// and skipped, and image paths holding no image are reported: exit status 1 for either.
pub(crate) fn cmd_embed(args: EmbedArgs) -> Result<ExitCode> {
    let mut texts = args.texts.clone();
    if let Some(path) = &args.texts_from {
        let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            let file = std::fs::File::open(path)
                .with_context(|| format!("reading texts from {}", path.display()))?;
            Box::new(std::io::BufReader::new(file))
        };
        for line in reader.lines() {
            let line = line.with_context(|| format!("reading texts from {}", path.display()))?;
            if !line.trim().is_empty() {
                texts.push(line);
            }
        }
    }
    if texts.is_empty() && args.images.is_empty() {
        bail!("nothing to embed: give --text, --texts-from or image files");
    }
    let model = load_model(&args.model)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !texts.is_empty() {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for (text, embedding) in texts.iter().zip(model.embed_texts(&refs)?) {
            let line = serde_json::json!({ "text": text, "embedding": embedding });
            writeln!(out, "{line}")?;
        }
    }
    let mut embedded = 0usize;
    let failed = embed_files(&model, &args.images, args.batch_size, |files, batch| {
        embedded += files.len();
        for (path, embedding) in files.iter().zip(batch) {
            let line = serde_json::json!({
                "image": path.display().to_string(),
                "embedding": embedding,
            });
            writeln!(out, "{line}")?;
        }
        Ok(())
    })?;
    out.flush()?;
    if !args.images.is_empty() && embedded == 0 && failed == 0 {
        eprintln!("cxr: no image under the paths given");
        return Ok(ExitCode::from(1));
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
