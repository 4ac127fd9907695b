//! What the integration tests share: running the real `cxr` binary, and a tiny model.
#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `cxr` binary built for these tests.
pub fn cxr_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cxr"))
}

/// Runs `cxr` with `args` and waits for it.
pub fn cxr(args: &[&str]) -> Output {
    cxr_command().args(args).output().expect("run cxr")
}

/// stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Report text for the tiny model's vocabulary, one JSON object per line.
pub const REPORTS: &str = r#"{"id": "r1", "findings": "Small left pleural effusion.", "impression": "Effusion."}
{"id": "r2", "findings": "Heart size is enlarged. Cardiomegaly.", "impression": ""}
{"id": "r3", "findings": "The lungs are clear.", "impression": "Normal chest."}
{"id": "r4", "findings": "", "impression": ""}
"#;

/// `DIR/model`: a `test`-preset model (`seed`), its vocabulary learnt from [`REPORTS`].
pub fn make_model_seeded(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let reports = dir.join("vocab.jsonl");
    std::fs::write(&reports, REPORTS.repeat(20)).unwrap();
    let model = dir.join(name);
    let seed = seed.to_string();
    let o = cxr(&[
        "model",
        "init",
        model.to_str().unwrap(),
        "--preset",
        "test",
        "--seed",
        &seed,
        "--vocab-from",
        reports.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    model
}

/// `DIR/model` with seed 0.
pub fn make_model(dir: &Path) -> PathBuf {
    make_model_seeded(dir, "model", 0)
}
