//! Checkpoint parity: each public layout `DualEncoder::load` reads gives the embeddings its
//! reference Python implementation gives, preprocessing included.
//!
//! The fixtures in `tests/fixtures/parity/<layout>/` are tiny random-weight models saved in each
//! layout's real on-disk form, made by `tools/make_parity_fixtures.py` (transformers, open_clip +
//! timm), with `reference.json`: the reference tokenizer's ids, the reference preprocessing of
//! `image.png` (a 54x40 grey PNG, so resizing and cropping matter), and the reference embeddings.
//!
//! Every fixture is checked at three points:
//! - the preprocessed image tensor (Hugging Face image processor / open_clip transform);
//! - projected embeddings *before* L2 normalisation (`get_image_features` /
//!   `get_text_features` / `encode_image` / `encode_text` / CLS or projected CLS), so a scale
//!   error cannot hide behind the normalisation;
//! - the L2-normalised embeddings, which are what the engine stores and searches.
//!
//! Tolerance: max abs diff <= 1e-4 in f32.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use cxr_search::ingest::{decode_file, DecodeOptions, GreyImage};
use cxr_search::model::{DualEncoder, ModelError, ModelLayout};

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity")
}

#[derive(serde::Deserialize)]
struct Reference {
    texts: Vec<String>,
    text_ids: Vec<Vec<u32>>,
    pixel_values: Option<Vec<f32>>,
    image_embedding: Option<Vec<f32>>,
    text_embeddings: Option<Vec<Vec<f32>>>,
}

fn reference(layout: &str) -> Reference {
    let path = fixtures().join(layout).join("reference.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

fn image() -> GreyImage {
    decode_file(&fixtures().join("image.png"), &DecodeOptions::default())
        .unwrap()
        .image
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn assert_close(what: &str, layout: &str, ours: &[f32], theirs: &[f32]) {
    let d = max_abs_diff(ours, theirs);
    eprintln!("{layout}: {what}: max abs diff {d:.3e}");
    assert!(
        d <= TOLERANCE,
        "{layout}: {what} differs from the reference by {d} (> {TOLERANCE})"
    );
}

/// Loads the fixture folder and checks every output the reference recorded.
fn check(layout_dir: &str, layout: ModelLayout) -> DualEncoder {
    let model = DualEncoder::load(&fixtures().join(layout_dir), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{layout_dir}: {e}"));
    assert_eq!(model.layout(), layout);
    let r = reference(layout_dir);

    if let (Some(pixels), Some(emb)) = (&r.pixel_values, &r.image_embedding) {
        let img = image();
        let input = model.prepare_image(&img);
        assert_close("preprocessed image", layout_dir, &input, pixels);
        // Pre-normalisation: the projected image embedding.
        let p = model.preprocess_config().unwrap();
        let t = Tensor::from_vec(
            input,
            (1, p.channels, p.image_size, p.image_size),
            &Device::Cpu,
        )
        .unwrap();
        let raw = model.encode_pixels(&t).unwrap().to_vec2::<f32>().unwrap();
        assert_close("image embedding (unnormalised)", layout_dir, &raw[0], emb);
        // What the engine stores.
        let stored = model.embed_images(std::slice::from_ref(&img)).unwrap();
        assert_close(
            "image embedding (normalised)",
            layout_dir,
            &stored[0],
            &normalised(emb),
        );
    }

    if let Some(embs) = &r.text_embeddings {
        let texts: Vec<&str> = r.texts.iter().map(String::as_str).collect();
        let (ids, mask) = model.tokenize(&texts).unwrap();
        let (ids, mask) = (
            ids.to_vec2::<u32>().unwrap(),
            mask.to_vec2::<u32>().unwrap(),
        );
        for (i, want) in r.text_ids.iter().enumerate() {
            let n = mask[i].iter().filter(|&&m| m == 1).count();
            assert_eq!(
                &ids[i][..n],
                &want[..],
                "{layout_dir}: token ids of text {i}"
            );
        }
        let raw = model
            .encode_texts(&texts)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let stored = model.embed_texts(&texts).unwrap();
        for (i, want) in embs.iter().enumerate() {
            assert_close(
                &format!("text {i} embedding (unnormalised)"),
                layout_dir,
                &raw[i],
                want,
            );
            assert_close(
                &format!("text {i} embedding (normalised)"),
                layout_dir,
                &stored[i],
                &normalised(want),
            );
        }
    }
    model
}

/// CLIP: `get_image_features` (post-layer-normed CLS through `visual_projection`) and
/// `get_text_features` (end-of-text state through `text_projection`), i.e. post-projection,
/// compared unnormalised and normalised; preprocessing is `CLIPImageProcessor` (shorter side,
/// centre crop, Pillow bicubic).
#[test]
fn clip_matches_transformers() {
    let m = check("clip", ModelLayout::HfClip);
    assert!(m.has_image_tower() && m.has_text_tower());
}

/// SigLIP: `get_image_features` (attention-pooled) and `get_text_features` (last position
/// through the head, texts padded to max_length), post-projection, unnormalised and normalised;
/// preprocessing is `SiglipImageProcessor` (both sides resized), tokens from `SiglipTokenizer`
/// over the fixture's `spiece.model`.
#[test]
fn siglip_matches_transformers() {
    check("siglip", ModelLayout::HfSiglip);
}

/// BiomedCLIP (open_clip): `encode_image` (timm CLS through `visual.head.proj`) and
/// `encode_text` (BERT CLS through the MLP `text.proj`), post-projection, unnormalised and
/// normalised; preprocessing is open_clip's eval transform (torchvision resize + centre crop).
#[test]
fn biomedclip_matches_open_clip() {
    check("biomedclip", ModelLayout::OpenClip);
}

/// RAD-DINO (`Dinov2Model`): `pooler_output` (final-normed CLS; there is no projection),
/// unnormalised and normalised; preprocessing is `BitImageProcessor` (resize 36, crop 32).
#[test]
fn rad_dino_matches_transformers_and_refuses_text() {
    let m = check("dinov2", ModelLayout::HfDinov2);
    assert!(!m.has_text_tower());
    let err = m.embed_texts(&["pleural effusion"]).unwrap_err();
    assert!(matches!(err, ModelError::NoTextTower { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("no text tower") && msg.contains("image-to-image"),
        "{msg}"
    );
}

/// Plain `BertModel`: the last layer's CLS token (no projection), unnormalised and normalised.
#[test]
fn bert_matches_transformers_and_refuses_images() {
    let m = check("bert", ModelLayout::HfBert);
    assert!(!m.has_image_tower());
    let err = m.embed_images(&[image()]).unwrap_err();
    assert!(matches!(err, ModelError::NoImageTower { .. }), "{err}");
}

/// CXR-BERT: the CLS token through `cls_projection_head` (post-projection), unnormalised and
/// normalised (the normalised one is what `get_projected_text_embeddings` returns); the
/// tokenizer is built from `vocab.txt`, as the hub folder has no `tokenizer.json`.
#[test]
fn cxr_bert_matches_its_reference_head() {
    let m = check("cxr_bert", ModelLayout::CxrBert);
    assert_eq!(m.dim(), 16, "the projection head sets the embedding size");
}

#[test]
fn fingerprints_are_stable_and_distinct() {
    let names = ["clip", "siglip", "biomedclip", "dinov2", "bert", "cxr_bert"];
    let prints: Vec<String> = names
        .iter()
        .map(|n| {
            DualEncoder::load(&fixtures().join(n), &Device::Cpu)
                .unwrap()
                .fingerprint()
                .to_string()
        })
        .collect();
    for (i, a) in prints.iter().enumerate() {
        for b in &prints[i + 1..] {
            assert_ne!(a, b);
        }
    }
    let again = DualEncoder::load(&fixtures().join("clip"), &Device::Cpu).unwrap();
    assert_eq!(again.fingerprint(), prints[0]);
}

#[test]
fn missing_weights_name_the_folder_and_the_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("clip/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let err = match DualEncoder::load(dir.path(), &Device::Cpu) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a folder without weights is not a model"),
    };
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
}

#[test]
fn unknown_model_type_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let err = match DualEncoder::load(dir.path(), &Device::Cpu) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("gpt2 is not a supported layout"),
    };
    assert!(err.contains("`gpt2`") && err.contains("siglip"), "{err}");
}
