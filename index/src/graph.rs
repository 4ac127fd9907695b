//! The HNSW graph (hnsw_rs) over the vector rows, and how it is dumped and reloaded.
//!
//! Why these choices:
//! - The graph is built incrementally by the writer and dumped at each commit; opening an
//!   index reloads the dump instead of rebuilding (rebuilding costs minutes at archive scale).
//! - hnsw_rs's `HnswIo::load_hnsw_with_dist(&'a self)` returns a graph that borrows the loader,
//!   so a reloaded graph is kept in a `self_cell` together with its loader.
//! - The distance is [`UnitDot`] = `1 - a.b` clamped at 0, *not* anndists' `DistDot`: the
//!   latter asserts `1 - a.b >= 0`, and for two copies of the same unit vector rounding can
//!   give `a.b` slightly above 1, which would panic inside a search. The dump records the
//!   distance's type name (`cxr_index::graph::UnitDot`) and reload checks it, so renaming or
//!   moving this type is a format change.
//! - hnsw_rs panics on unreadable dumps and on files it cannot create; those calls run inside
//!   `catch_unwind` and come back as [`IndexError::Corrupt`] / [`IndexError::Hnsw`].
//! - The graph's data id of a point is the document ordinal, so hits need no mapping.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{AnnT, Distance, Hnsw};
use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};
use crate::text::Bm25Params;
use crate::vectors::{dot, VectorPlacement};

/// Distance for unit-norm vectors: `1 - cosine`, clamped at 0 against rounding.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        (1.0 - dot(va, vb)).max(0.0)
    }
}

/// HNSW construction parameters, recorded in the manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HnswParams {
    /// Maximum links per node and layer (`M`); at most 255.
    pub max_nb_connection: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
    /// Maximum number of layers (hnsw_rs caps it at 16).
    pub max_layer: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            max_nb_connection: 16,
            ef_construction: 200,
            max_layer: 16,
        }
    }
}

impl HnswParams {
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |reason: &str| {
            Err(IndexError::InvalidParams {
                reason: reason.to_string(),
            })
        };
        if !(2..=255).contains(&self.max_nb_connection) {
            return bad("max_nb_connection must be in 2..=255");
        }
        if self.ef_construction == 0 {
            return bad("ef_construction must be positive");
        }
        if !(1..=16).contains(&self.max_layer) {
            return bad("max_layer must be in 1..=16");
        }
        Ok(())
    }
}

/// Read-time search parameters (not stored; each reader chooses its own).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchOptions {
    /// Lower bound of the HNSW search list size; the search uses `max(ef_search, 2k)`.
    /// Default 128: on 5k random unit vectors of dimension 64 (a hard case) recall@10 was
    /// 0.954 at 64, 0.987 at 100 and 0.996 at 128, for about 1.5x the time of 64.
    pub ef_search: usize,
    /// With at most this many vectors, [`Index::search_vector`](crate::Index::search_vector)
    /// scans them exactly instead of walking the graph: it is as fast and never misses.
    pub exact_threshold: usize,
    /// BM25 parameters of [`Index::search_text`](crate::Index::search_text).
    pub bm25: Bm25Params,
    /// Where the vector rows are kept while the index is open.
    pub vector_placement: VectorPlacement,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            ef_search: 128,
            exact_threshold: 1000,
            bm25: Bm25Params::default(),
            vector_placement: VectorPlacement::Mapped,
        }
    }
}

type Graph<'a> = Hnsw<'a, f32, UnitDot>;

/// Batches at least this large are inserted in parallel (the writer flushes 1,024 at a time).
pub(crate) const PARALLEL_INSERT_FROM: usize = 1024;

self_cell::self_cell!(
    /// A graph reloaded from a dump, together with the loader it borrows from.
    pub(crate) struct LoadedGraph {
        owner: HnswIo,
        #[not_covariant]
        dependent: Graph,
    }
);

/// An HNSW graph either built in this process or reloaded from a dump.
pub(crate) enum HnswGraph {
    Built(Box<Graph<'static>>),
    Loaded(LoadedGraph),
}

impl std::fmt::Debug for HnswGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswGraph")
            .field("points", &self.len())
            .finish()
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "hnsw_rs panicked".to_string())
}

impl HnswGraph {
    /// An empty graph; `capacity` is a sizing hint.
    pub(crate) fn new(params: &HnswParams, capacity: usize) -> HnswGraph {
        HnswGraph::Built(Box::new(Hnsw::new(
            params.max_nb_connection,
            capacity.max(1024),
            params.max_layer,
            params.ef_construction,
            UnitDot,
        )))
    }

    /// Reloads `dir/basename.hnsw.{graph,data}`.
    pub(crate) fn load(dir: &Path, basename: &str) -> Result<HnswGraph> {
        let path = dir.join(basename);
        let io = HnswIo::new(dir, basename);
        let loaded = LoadedGraph::try_new(io, |io| {
            match catch_unwind(AssertUnwindSafe(|| {
                io.load_hnsw_with_dist::<f32, UnitDot>(UnitDot)
            })) {
                Ok(Ok(graph)) => Ok(graph),
                Ok(Err(e)) => Err(IndexError::corrupt(
                    &path,
                    format!("cannot reload HNSW graph: {e:#}"),
                )),
                Err(payload) => Err(IndexError::corrupt(
                    &path,
                    format!("cannot reload HNSW graph: {}", panic_message(&*payload)),
                )),
            }
        })?;
        Ok(HnswGraph::Loaded(loaded))
    }

    fn with<R>(&self, f: impl for<'a> FnOnce(&Graph<'a>) -> R) -> R {
        match self {
            HnswGraph::Built(graph) => f(graph),
            HnswGraph::Loaded(loaded) => loaded.with_dependent(|_, graph| f(graph)),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.with(|g| g.get_nb_point())
    }

    /// Dimension of the stored points (0 while empty).
    pub(crate) fn dim(&self) -> usize {
        self.with(|g| g.get_point_indexation().get_data_dimension())
    }

    /// Inserts (vector, ordinal) pairs: in parallel for full batches, one by one below
    /// [`PARALLEL_INSERT_FROM`]. A parallel insert's graph depends on thread timing; inserting
    /// the small remainder a commit flushes one by one costs little and makes a small index the
    /// same graph on every build (and its tests repeatable).
    pub(crate) fn insert(&self, items: &[(&[f32], usize)]) {
        self.with(|g| {
            if items.len() >= PARALLEL_INSERT_FROM {
                g.parallel_insert_slice(&items.to_vec());
            } else {
                for &(v, id) in items {
                    g.insert_slice((v, id));
                }
            }
        })
    }

    /// The `k` nearest points to the unit-norm `query`: (ordinal, cosine), best first. Readers
    /// search the flat copy ([`crate::flat`]); this checks a reloaded dump in tests.
    #[cfg(test)]
    pub(crate) fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<(usize, f32)> {
        self.with(|g| {
            g.search(query, k, ef.max(k))
                .into_iter()
                .map(|n| (n.d_id, 1.0 - n.distance))
                .collect()
        })
    }

    /// A plain copy of the graph's structure (points, levels, neighbour lists), for
    /// [`check`](crate::check). `visit` sees each point's data id and vector. Runs inside
    /// `catch_unwind`: a graph that makes hnsw_rs panic comes back as an error message.
    pub(crate) fn snapshot(
        &self,
        mut visit: impl FnMut(usize, &[f32]),
    ) -> std::result::Result<GraphSnapshot, String> {
        catch_unwind(AssertUnwindSafe(|| {
            self.with(|g| {
                let indexation = g.get_point_indexation();
                let max_level = indexation.get_max_level_observed();
                let mut points = Vec::with_capacity(indexation.get_nb_point());
                for layer in 0..=usize::from(max_level) {
                    for point in indexation.get_layer_iterator(layer) {
                        visit(point.get_origin_id(), point.get_v());
                        let id = point.get_point_id();
                        points.push(SnapshotPoint {
                            data_id: point.get_origin_id(),
                            level: id.0,
                            rank: id.1,
                            neighbours: Vec::new(),
                        });
                    }
                }
                let slot: HashMap<(u8, i32), u32> = points
                    .iter()
                    .enumerate()
                    .map(|(i, p)| ((p.level, p.rank), i as u32))
                    .collect();
                // A second walk in the same order turns each point's neighbour ids into slots
                // at once, so hnsw_rs's lists are never all copied out at the same time.
                let mut dangling = 0usize;
                let walk = (0..=usize::from(max_level))
                    .flat_map(|layer| indexation.get_layer_iterator(layer));
                for (point, source) in points.iter_mut().zip(walk) {
                    point.neighbours = source
                        .get_neighborhood_id()
                        .into_iter()
                        .map(|layer| {
                            layer
                                .iter()
                                .filter_map(|n| {
                                    let found = slot.get(&(n.p_id.0, n.p_id.1)).copied();
                                    dangling += usize::from(found.is_none());
                                    found
                                })
                                .collect()
                        })
                        .collect();
                    while point.neighbours.last().is_some_and(Vec::is_empty) {
                        point.neighbours.pop();
                    }
                }
                GraphSnapshot {
                    points,
                    max_level,
                    dangling,
                }
            })
        }))
        .map_err(|payload| panic_message(&*payload))
    }

    /// Dumps the graph as `dir/basename.hnsw.{graph,data}`; returns the basename hnsw_rs used.
    pub(crate) fn dump(&self, dir: &Path, basename: &str) -> Result<String> {
        let path = dir.join(basename);
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.with(|g| g.file_dump(dir, basename))
        }));
        match result {
            Ok(Ok(name)) => Ok(name),
            Ok(Err(e)) => Err(IndexError::Hnsw {
                path,
                reason: format!("dump failed: {e:#}"),
            }),
            Err(payload) => Err(IndexError::Hnsw {
                path,
                reason: format!("dump failed: {}", panic_message(&*payload)),
            }),
        }
    }
}

/// The structure of an HNSW graph, copied out of hnsw_rs (see [`HnswGraph::snapshot`]).
#[derive(Debug)]
pub(crate) struct GraphSnapshot {
    /// Every point, layer by layer (layer 0 first), in hnsw_rs's storage order.
    pub points: Vec<SnapshotPoint>,
    /// The highest level holding a point (the entry point's level).
    pub max_level: u8,
    /// Neighbour references naming no stored point (dropped from the lists).
    pub dangling: usize,
}

/// One point of a [`GraphSnapshot`].
#[derive(Debug)]
pub(crate) struct SnapshotPoint {
    /// The data id (document ordinal).
    pub data_id: usize,
    /// The highest layer the point belongs to.
    pub level: u8,
    /// Its position in `level`'s storage (hnsw_rs's `PointId.1`).
    pub rank: i32,
    /// Per layer (index = layer), its neighbours as indices into `points`.
    pub neighbours: Vec<Vec<u32>>,
}

/// The entry point recorded at the end of an hnsw_rs 0.3 full dump's graph file: data id,
/// level and rank in level (`usize`, `u8`, `i32`, native endian). hnsw_rs has no accessor
/// for the entry point, and the reload keeps exactly this one. `None` if the file is short.
pub(crate) fn dump_entry_point(graph_file: &Path) -> Option<(usize, u8, i32)> {
    use std::io::{Read, Seek, SeekFrom};
    const USIZE: usize = std::mem::size_of::<usize>();
    const TRAILER: usize = USIZE + 1 + 4;
    let mut file = std::fs::File::open(graph_file).ok()?;
    file.seek(SeekFrom::End(-(TRAILER as i64))).ok()?;
    let mut tail = [0u8; TRAILER];
    file.read_exact(&mut tail).ok()?;
    let data_id = usize::from_ne_bytes(tail[..USIZE].try_into().ok()?);
    let level = tail[USIZE];
    let rank = i32::from_ne_bytes(tail[USIZE + 1..].try_into().ok()?);
    Some((data_id, level, rank))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_type_name_is_stable() {
        // The dump stores this name and reload compares it: changing it breaks old indexes.
        assert_eq!(
            std::any::type_name::<UnitDot>(),
            "cxr_index::graph::UnitDot"
        );
    }

    #[test]
    fn identical_unit_vectors_do_not_panic() {
        let v = [0.1f32; 100];
        let mut u = v;
        crate::vectors::normalize(&mut u).unwrap();
        assert_eq!(UnitDot.eval(&u, &u), 0.0);
    }

    #[test]
    fn dump_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let graph = HnswGraph::new(&HnswParams::default(), 10);
        let vs: Vec<Vec<f32>> = (0..50)
            .map(|i| {
                let mut v = vec![(i as f32).sin(), (i as f32).cos(), 0.5];
                crate::vectors::normalize(&mut v).unwrap();
                v
            })
            .collect();
        let items: Vec<(&[f32], usize)> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| (v.as_slice(), i))
            .collect();
        graph.insert(&items);
        let name = graph.dump(dir.path(), "hnsw-1").unwrap();
        assert_eq!(name, "hnsw-1");
        let loaded = HnswGraph::load(dir.path(), &name).unwrap();
        assert_eq!(loaded.len(), 50);
        assert_eq!(loaded.dim(), 3);
        let hits = loaded.search(&vs[7], 1, 16);
        assert_eq!(hits[0].0, 7);
        // and the reloaded graph keeps accepting points
        loaded.insert(&[(vs[0].as_slice(), 50)]);
        assert_eq!(loaded.len(), 51);
    }

    #[test]
    fn garbage_dump_is_corrupt_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hnsw-1.hnsw.graph"), b"garbage").unwrap();
        std::fs::write(dir.path().join("hnsw-1.hnsw.data"), b"garbage").unwrap();
        let err = HnswGraph::load(dir.path(), "hnsw-1").unwrap_err();
        assert!(matches!(err, IndexError::Corrupt { .. }), "{err}");
    }
}
