//! Crash safety: `cxr index` killed with SIGKILL at random moments, then run again, ends with
//! every file indexed exactly once, and every interrupted state opens at its last commit.
//!
//! The number of kills is 8 by default to bound the test's time; `CXR_CRASH_KILLS=50 cargo test
//! --test crash` runs the full harness.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{cxr_command as cxr, make_model};

const FILES: usize = 400;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The ids of the committed documents, checking that none repeats.
fn committed_ids(idx: &Path) -> Option<HashSet<String>> {
    if !idx.join(cxr_index::MANIFEST_FILE).exists() {
        return None;
    }
    let index = cxr_index::Index::open(idx).expect("an interrupted index opens at its last commit");
    let mut ids = HashSet::new();
    for ord in 0..index.ord_bound() {
        let doc = index.doc(ord).expect("every ordinal has a document");
        assert!(ids.insert(doc.id.to_string()), "{} indexed twice", doc.id);
    }
    assert_eq!(
        index.vector_count(),
        index.len(),
        "vector count = document count"
    );
    Some(ids)
}

#[test]
fn killed_runs_resume_without_loss_or_duplicates() {
    let kills: usize = std::env::var("CXR_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    for i in 0..FILES {
        // Distinct content for every file (copies would be skipped as duplicates): the first
        // two pixels spell the file number.
        image::GrayImage::from_fn(32, 32, |x, y| {
            let v = match (x, y) {
                (0, 0) => i % 256,
                (1, 0) => i / 256,
                _ => (x as usize * (i + 1) + y as usize * 7) % 256,
            };
            image::Luma([v as u8])
        })
        .save(archive.join(format!("img{i:03}.png")))
        .unwrap();
    }
    let model = make_model(dir.path());
    let idx = dir.path().join("idx");
    let args = [
        "index",
        archive.to_str().unwrap(),
        "--out",
        idx.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--batch-size",
        "4",
        "--commit-every",
        "10",
        "-q",
    ];

    // How long an uninterrupted run takes here, to spread the kills over it.
    let probe = dir.path().join("probe");
    let started = Instant::now();
    let mut probe_args = args;
    probe_args[3] = probe.to_str().unwrap();
    assert!(cxr()
        .args(probe_args)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    let full = started.elapsed().as_millis().max(50) as u64;

    let mut rng = 2024u64;
    let mut previous = 0usize;
    let mut interrupted = 0usize;
    for round in 0..kills {
        let mut child = cxr()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill within the first quarter of a full run's time, so that each resumed run is
        // interrupted again before it finishes.
        std::thread::sleep(Duration::from_millis(
            splitmix(&mut rng) % (full / 4).max(1),
        ));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if let Some(ids) = committed_ids(&idx) {
            assert!(
                ids.len() >= previous,
                "round {round}: committed documents were lost"
            );
            previous = ids.len();
            interrupted += usize::from(previous < FILES);
            let check = cxr()
                .args(["check", idx.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                check.status.success(),
                "round {round}: {}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
            if previous == FILES {
                // Complete: start over, so that the next kills land in unfinished runs too.
                std::fs::remove_dir_all(&idx).unwrap();
                previous = 0;
            }
        }
    }
    // Finish: a plain re-run completes the index.
    let last = cxr().args(args).output().unwrap();
    assert!(
        last.status.success(),
        "the final run failed: {}",
        String::from_utf8_lossy(&last.stderr)
    );
    let ids = committed_ids(&idx).expect("a finished index");
    assert_eq!(ids.len(), FILES);
    for i in 0..FILES {
        assert!(ids.contains(&format!("img{i:03}")));
    }
    eprintln!(
        "{kills} kills, {interrupted} of them with the index incomplete; {previous} documents \
         were committed before the final run"
    );
    assert!(
        interrupted > 0,
        "no kill landed before the index was complete"
    );
}
