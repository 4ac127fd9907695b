//! `cxr check` and `cxr info`: what an index holds, and whether it is whole.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use cxr_index::Index;

pub(crate) fn cmd_check(index_dir: &Path, json: bool) -> Result<ExitCode> {
    let report = cxr_index::check(index_dir)
        .with_context(|| format!("checking index {}", index_dir.display()))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
        println!(
            "{}: {}",
            index_dir.display(),
            if report.ok() { "ok" } else { "DAMAGED" }
        );
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(crate) fn cmd_info(index_dir: &Path, json: bool) -> Result<ExitCode> {
    let index =
        Index::open(index_dir).with_context(|| format!("opening index {}", index_dir.display()))?;
    let m = index.manifest();
    if json {
        println!("{}", serde_json::to_string(m)?);
    } else {
        println!("index      {}", index_dir.display());
        if m.deleted_count > 0 {
            println!(
                "documents  {} (and {} deleted, whose space `cxr compact` reclaims)",
                index.len(),
                m.deleted_count
            );
        } else {
            println!("documents  {}", index.len());
        }
        println!(
            "vectors    {} x {} ({})",
            m.vector_count, m.spec.dim, m.vector_storage
        );
        println!(
            "segments   {} sealed and the active one ({} vectors; sealed at {})",
            m.files.sealed.len(),
            m.active_rows(),
            m.segment_rows
        );
        println!(
            "graph      HNSW, M {}, ef_construction {}",
            m.hnsw.max_nb_connection, m.hnsw.ef_construction
        );
        println!(
            "model      {} ({})",
            m.spec.model_name, m.spec.model_fingerprint
        );
        println!("format     {}", m.format_version);
    }
    Ok(ExitCode::SUCCESS)
}
