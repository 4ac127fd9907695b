//! The HNSW graph as readers search it: flat neighbour arrays in one file, memory-mapped.
//!
//! hnsw_rs builds the graph (its insertion and neighbour selection are the hard part of HNSW)
//! and its dump stays the writer's copy, which a later writer reloads to append. But reloading
//! that dump rebuilds an object per point (an `Arc`, a lock per neighbour list), which made
//! opening a 100k-vector index take seconds, and walking those objects is pointer chasing. So
//! each commit also writes the graph's structure as arrays of `u32` (`graph-<gen>.flat`), and
//! readers map that file and search it in place (Malkov and Yashunin, "Efficient and robust
//! approximate nearest neighbor search using HNSW graphs", TPAMI 2018, algorithms 2 and 5):
//! greedy descent through the upper layers from the entry point, then a best-first beam of
//! width `ef` on layer 0. Opening costs a CRC and a structural check of the arrays, no
//! allocation per point.
//!
//! # File format
//!
//! Little-endian `u32` words:
//!
//! ```text
//! MAGIC, VERSION, n (nodes), layers (>= 1), entry (node)
//! ords[n]          the document ordinal of each node
//! rows[n]          the node's row in the vector file
//! layer 0:         offsets[n + 1], neighbours[offsets[n]]        (node numbers)
//! layer l >= 1:    m, members[m] (ascending node numbers), offsets[m + 1], neighbours[offsets[m]]
//! ```

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{IndexError, Result};
use crate::fsio;
use crate::graph::GraphSnapshot;
use crate::manifest::FileEntry;
use crate::vectors::{self, RowView};

const MAGIC: u32 = u32::from_le_bytes(*b"CXRG");
const VERSION: u32 = 1;
const HEADER: usize = 5;

thread_local! {
    /// The layer-0 walk's visited bitmap, one bit per node, kept per thread and cleared per
    /// query, so that a query allocates nothing in proportion to the index (125 KiB at 1M
    /// nodes).
    static VISITED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Where the words live: mapped from a file, or built in memory (indexes written before the
/// flat file existed, whose hnsw_rs dump is converted at open).
#[derive(Debug)]
enum Words {
    Mapped(Mmap),
    Owned(Vec<u32>),
}

impl Words {
    fn as_slice(&self) -> &[u32] {
        match self {
            // SAFETY: any bit pattern is a valid u32; alignment and length were checked when
            // the map was made (`FlatGraph::open`).
            Words::Mapped(map) => unsafe { map.align_to::<u32>().1 },
            Words::Owned(v) => v,
        }
    }
}

/// One layer's adjacency: `neighbours[offsets[i]..offsets[i + 1]]` for the layer's i-th
/// member. Ranges are word positions in the file.
#[derive(Clone, Debug)]
struct Layer {
    /// Members (ascending node numbers); `None` for layer 0, where every node is a member.
    members: Option<(usize, usize)>,
    offsets: (usize, usize),
    neighbours: (usize, usize),
}

/// A read-only HNSW graph over flat arrays.
#[derive(Debug)]
pub(crate) struct FlatGraph {
    words: Words,
    nodes: usize,
    entry: u32,
    ords: (usize, usize),
    rows: (usize, usize),
    layers: Vec<Layer>,
    /// The nodes no walk from the entry point reaches ([`FlatGraph::unreachable`]), found at
    /// the first search: every search scores them exactly.
    orphans: std::sync::OnceLock<Vec<u32>>,
}

/// A (distance, node) pair ordered by distance, then node.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Near(f32, u32);

impl Eq for Near {}
impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

impl FlatGraph {
    /// Encodes the structure of an hnsw_rs graph. `row_of(ord)` gives a document's vector row;
    /// `entry` is the hnsw_rs entry point (data id, level, rank) if known, else the first point
    /// of the top layer is used (any top-layer point is a valid start).
    pub(crate) fn encode(
        snapshot: &GraphSnapshot,
        entry: Option<(usize, u8, i32)>,
        row_of: impl Fn(usize) -> Option<u32>,
    ) -> std::result::Result<Vec<u32>, String> {
        let points = &snapshot.points;
        let n = points.len();
        let layers = usize::from(snapshot.max_level) + 1;
        let entry_node = entry
            .and_then(|(id, level, rank)| {
                points
                    .iter()
                    .position(|p| p.data_id == id && p.level == level && p.rank == rank)
            })
            .filter(|&i| points[i].level == snapshot.max_level)
            .or_else(|| points.iter().position(|p| p.level == snapshot.max_level));
        let entry_node = match (n, entry_node) {
            (0, _) => 0,
            (_, Some(i)) => i,
            (_, None) => return Err("the graph has no point on its top layer".into()),
        };
        let mut w = vec![MAGIC, VERSION, n as u32, layers as u32, entry_node as u32];
        for p in points {
            w.push(u32::try_from(p.data_id).map_err(|_| "a data id exceeds u32")?);
        }
        for p in points {
            let row = row_of(p.data_id)
                .ok_or_else(|| format!("graph point {} has no vector row", p.data_id))?;
            w.push(row);
        }
        for layer in 0..layers {
            let members: Vec<u32> = (0..n as u32)
                .filter(|&i| usize::from(points[i as usize].level) >= layer)
                .collect();
            if layer > 0 {
                w.push(members.len() as u32);
                w.extend_from_slice(&members);
            }
            let mut offset = 0u32;
            w.push(0);
            let mut lists: Vec<u32> = Vec::new();
            for &m in &members {
                let list = points[m as usize]
                    .neighbours
                    .get(layer)
                    .map_or(&[][..], Vec::as_slice);
                lists.extend_from_slice(list);
                offset += list.len() as u32;
                w.push(offset);
            }
            w.extend_from_slice(&lists);
        }
        Ok(w)
    }

    /// Writes encoded words to `dir/name`, synced, and describes the file for the manifest.
    pub(crate) fn write(dir: &Path, name: &str, words: &[u32]) -> Result<FileEntry> {
        fsio::write_synced(dir, name, |out: &mut dyn std::io::Write| {
            let mut buf = Vec::with_capacity(4 * 4096);
            for chunk in words.chunks(4096) {
                buf.clear();
                for w in chunk {
                    buf.extend_from_slice(&w.to_le_bytes());
                }
                out.write_all(&buf)?;
            }
            Ok(())
        })
    }

    /// Maps `dir/entry`, checks its CRC and structure, and its agreement with the index
    /// (`nodes` points, rows below `rows`).
    pub(crate) fn open(dir: &Path, entry: &FileEntry, nodes: u64, rows: u64) -> Result<FlatGraph> {
        let path = dir.join(&entry.name);
        let file = File::open(&path).map_err(IndexError::io(&path))?;
        // SAFETY: generation files are written once and never modified afterwards (see
        // `VectorStore::open`); the map is read-only.
        let map = unsafe { Mmap::map(&file) }.map_err(IndexError::io(&path))?;
        fsio::verify(dir, entry, &map)?;
        if cfg!(target_endian = "big") {
            return Err(IndexError::corrupt(
                &path,
                "little-endian graph files are not supported on big-endian machines",
            ));
        }
        // SAFETY: any bit pattern is a valid u32; align_to only yields the aligned middle.
        let (head, _, tail) = unsafe { map.align_to::<u32>() };
        if !head.is_empty() || !tail.is_empty() {
            return Err(IndexError::corrupt(
                &path,
                "the graph file is not a whole number of aligned words",
            ));
        }
        Self::parse(Words::Mapped(map), nodes, rows).map_err(|e| IndexError::corrupt(&path, e))
    }

    /// A graph from encoded words held in memory.
    pub(crate) fn from_words(
        words: Vec<u32>,
        nodes: u64,
        rows: u64,
    ) -> std::result::Result<FlatGraph, String> {
        Self::parse(Words::Owned(words), nodes, rows)
    }

    /// Finds the sections and checks every offset and reference, so that search never
    /// indexes out of bounds whatever the file holds.
    fn parse(words: Words, nodes: u64, rows: u64) -> std::result::Result<FlatGraph, String> {
        let w = words.as_slice();
        if w.len() < HEADER || w[0] != MAGIC {
            return Err("not a graph file (bad magic)".into());
        }
        if w[1] != VERSION {
            return Err(format!("graph file version {} (expected {VERSION})", w[1]));
        }
        let n = w[2] as usize;
        let layer_count = w[3] as usize;
        let entry = w[4];
        if n as u64 != nodes {
            return Err(format!(
                "the graph has {n} points, the index {nodes} vectors"
            ));
        }
        if layer_count == 0 || layer_count > 64 {
            return Err(format!("{layer_count} layers"));
        }
        if n > 0 && entry as usize >= n {
            return Err("the entry point is out of range".into());
        }
        let mut at = HEADER;
        let mut take = |len: usize| -> std::result::Result<(usize, usize), String> {
            let end = at
                .checked_add(len)
                .filter(|&e| e <= w.len())
                .ok_or("the graph file is truncated")?;
            let range = (at, end);
            at = end;
            Ok(range)
        };
        let ords = take(n)?;
        let row_range = take(n)?;
        if w[row_range.0..row_range.1]
            .iter()
            .any(|&r| u64::from(r) >= rows)
        {
            return Err("a graph point names a vector row out of range".into());
        }
        let mut layers = Vec::with_capacity(layer_count);
        let mut previous: Option<Vec<u32>> = None;
        for layer in 0..layer_count {
            let (members, count) = if layer == 0 {
                (None, n)
            } else {
                let (s, e) = take(1)?;
                let m = w[s..e][0] as usize;
                let range = take(m)?;
                let list = &w[range.0..range.1];
                if list.windows(2).any(|p| p[0] >= p[1])
                    || list.last().is_some_and(|&x| x as usize >= n)
                {
                    return Err(format!(
                        "layer {layer}'s members are not ascending node numbers"
                    ));
                }
                // Each upper layer is a subset of the one below (HNSW's nesting).
                if let Some(prev) = &previous {
                    if list.iter().any(|x| prev.binary_search(x).is_err()) {
                        return Err(format!("layer {layer} holds a point missing below it"));
                    }
                }
                previous = Some(list.to_vec());
                (Some(range), m)
            };
            let offsets = take(count + 1)?;
            let off = &w[offsets.0..offsets.1];
            if off[0] != 0 || off.windows(2).any(|p| p[0] > p[1]) {
                return Err(format!("layer {layer}'s offsets are not ascending"));
            }
            let neighbours = take(off[count] as usize)?;
            if w[neighbours.0..neighbours.1]
                .iter()
                .any(|&x| x as usize >= n)
            {
                return Err(format!("layer {layer} names a point out of range"));
            }
            // Upper-layer lists may name points that are not on that layer (hnsw_rs's lists
            // do, rarely): the descent moves to such a point and finds no list there, which
            // only ends that layer's greedy walk early.
            if layer == 0 {
                previous = Some((0..n as u32).collect());
            }
            layers.push(Layer {
                members,
                offsets,
                neighbours,
            });
        }
        if at != w.len() {
            return Err("trailing words after the last layer".into());
        }
        if n > 0 {
            let top = &layers[layer_count - 1];
            let on_top = match top.members {
                None => true,
                Some((s, e)) => w[s..e].binary_search(&entry).is_ok(),
            };
            if !on_top {
                return Err("the entry point is not on the top layer".into());
            }
        }
        Ok(FlatGraph {
            words,
            nodes: n,
            entry,
            ords,
            rows: row_range,
            layers,
            orphans: std::sync::OnceLock::new(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes
    }

    pub(crate) fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// The encoded words, as [`Self::encode`] made them.
    pub(crate) fn words(&self) -> &[u32] {
        self.words.as_slice()
    }

    /// (document ordinal, local row) of every node, in node order.
    pub(crate) fn points(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let ords = self.section(self.ords);
        let rows = self.section(self.rows);
        ords.iter().copied().zip(rows.iter().copied())
    }

    /// Nodes no walk can return: a search descends from the entry point through the upper
    /// layers and then walks layer 0, so the nodes it can reach are those reachable on the
    /// upper layers from the entry point (any of them can end the descent), and everything
    /// reachable on layer 0 from those. HNSW leaves such nodes behind when a point unlike
    /// its neighbours is inserted late: it links to them, but each of them keeps closer
    /// neighbours than it. [`search`](Self::search) scores them exactly.
    pub(crate) fn unreachable(&self) -> Vec<u32> {
        let n = self.nodes;
        if n == 0 {
            return Vec::new();
        }
        // One bit per node: a reader pays for this once, at its first search.
        let mut reached = vec![0u64; n.div_ceil(64)];
        let mut mark = |node: u32| {
            let (word, bit) = (node as usize / 64, 1u64 << (node % 64));
            let fresh = reached[word] & bit == 0;
            reached[word] |= bit;
            fresh
        };
        mark(self.entry);
        // The nodes reached on the upper layers: each can end the descent, so each starts
        // the walk of every layer below.
        let mut upper = vec![self.entry];
        let mut stack: Vec<u32> = Vec::new();
        for layer in (0..self.layers.len()).rev() {
            stack.extend_from_slice(&upper);
            while let Some(node) = stack.pop() {
                for &next in self.neighbours(layer, node) {
                    if mark(next) {
                        if layer > 0 {
                            upper.push(next);
                        }
                        stack.push(next);
                    }
                }
            }
        }
        (0..n as u32)
            .filter(|&i| reached[i as usize / 64] & (1u64 << (i % 64)) == 0)
            .collect()
    }

    fn section(&self, range: (usize, usize)) -> &[u32] {
        &self.words.as_slice()[range.0..range.1]
    }

    /// Neighbours of `node` on `layer` (empty if the node is not on it).
    fn neighbours(&self, layer: usize, node: u32) -> &[u32] {
        let l = &self.layers[layer];
        let i = match l.members {
            None => node as usize,
            Some(range) => match self.section(range).binary_search(&node) {
                Ok(i) => i,
                Err(_) => return &[],
            },
        };
        let off = self.section(l.offsets);
        let (s, e) = (off[i] as usize, off[i + 1] as usize);
        &self.section(l.neighbours)[s..e]
    }

    /// The `k` nearest nodes to the unit-norm `query` among those whose ordinal `allow`
    /// accepts: (ordinal, cosine), best first. Rejected nodes still route the walk. Nodes the
    /// walk cannot reach are scored exactly (the first search finds them, in one pass over
    /// the graph's edges), so that the graph never hides a document.
    pub(crate) fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        vectors: RowView<'_>,
        allow: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<(u32, f32)> {
        if self.nodes == 0 || k == 0 {
            return Vec::new();
        }
        let ef = ef.max(k);
        let ords = self.section(self.ords);
        let rows = self.section(self.rows);
        let distance = |node: u32| 1.0 - vectors.dot(query, rows[node as usize] as usize);
        let accepts = |node: u32| allow.is_none_or(|a| a(ords[node as usize]));

        // Greedy descent through the upper layers.
        let mut current = self.entry;
        let mut best = distance(current);
        for layer in (1..self.layers.len()).rev() {
            loop {
                let mut moved = false;
                for &next in self.neighbours(layer, current) {
                    let d = distance(next);
                    if d < best {
                        best = d;
                        current = next;
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }

        // Best-first beam on layer 0.
        VISITED.with_borrow_mut(|visited| {
            visited.clear();
            visited.resize(self.nodes.div_ceil(64), 0);
            self.beam(k, ef, vectors, &accepts, &distance, current, best, visited)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn beam(
        &self,
        k: usize,
        ef: usize,
        vectors: RowView<'_>,
        accepts: &dyn Fn(u32) -> bool,
        distance: &dyn Fn(u32) -> f32,
        current: u32,
        best: f32,
        visited: &mut [u64],
    ) -> Vec<(u32, f32)> {
        let ords = self.section(self.ords);
        let rows = self.section(self.rows);
        let seen =
            |visited: &[u64], node: u32| visited[node as usize / 64] & (1u64 << (node % 64)) != 0;
        let mark =
            |visited: &mut [u64], node: u32| visited[node as usize / 64] |= 1u64 << (node % 64);
        mark(visited, current);
        let mut candidates = BinaryHeap::new();
        candidates.push(Reverse(Near(best, current)));
        // The nearest accepted nodes so far, worst on top, at most `ef`.
        let mut found: BinaryHeap<Near> = BinaryHeap::with_capacity(ef + 1);
        if accepts(current) {
            found.push(Near(best, current));
        }
        let offsets0 = self.section(self.layers[0].offsets);
        let lists0 = self.section(self.layers[0].neighbours);
        let mut todo: Vec<u32> = Vec::new();
        while let Some(Reverse(Near(d, node))) = candidates.pop() {
            if found.len() >= ef && found.peek().is_some_and(|worst| d > worst.0) {
                break;
            }
            // The unvisited neighbours, marked now; their first lines start loading at once,
            // and each one's rest while the distance before it is computed.
            todo.clear();
            for &next in self.neighbours(0, node) {
                if !seen(visited, next) {
                    mark(visited, next);
                    vectors.prefetch(rows[next as usize] as usize);
                    todo.push(next);
                }
            }
            for (i, &next) in todo.iter().enumerate() {
                if let Some(&after) = todo.get(i + 1) {
                    vectors.prefetch_rest(rows[after as usize] as usize);
                }
                let dn = distance(next);
                let worse_than_all = found.len() >= ef && found.peek().is_some_and(|w| dn >= w.0);
                if worse_than_all {
                    continue;
                }
                vectors::prefetch(&offsets0[next as usize..next as usize + 1]);
                candidates.push(Reverse(Near(dn, next)));
                if accepts(next) {
                    found.push(Near(dn, next));
                    if found.len() > ef {
                        found.pop();
                    }
                }
            }
            // The list the next round expands starts loading now (its offset was prefetched
            // when it became a candidate).
            if let Some(Reverse(Near(_, next))) = candidates.peek() {
                let start = offsets0[*next as usize] as usize;
                if let Some(list) = lists0.get(start..) {
                    vectors::prefetch(&list[..list.len().min(32)]);
                }
            }
        }
        for &node in self.orphans.get_or_init(|| self.unreachable()) {
            if accepts(node) {
                found.push(Near(distance(node), node));
                if found.len() > ef {
                    found.pop();
                }
            }
        }
        let mut out: Vec<(u32, f32)> = found
            .into_sorted_vec()
            .into_iter()
            .map(|Near(d, node)| (ords[node as usize], 1.0 - d))
            .collect();
        out.truncate(k);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{HnswGraph, HnswParams};
    use crate::vectors::dot;

    /// 300 unit vectors of dimension 8 in an hnsw_rs graph (data id = row), and its encoding.
    fn graph() -> (Vec<f32>, Vec<u32>) {
        let (vectors, snapshot) = snapshot();
        let words = FlatGraph::encode(&snapshot, None, |ord| Some(ord as u32)).unwrap();
        (vectors, words)
    }

    /// The vectors of [`graph`] and hnsw_rs's graph over them.
    fn snapshot() -> (Vec<f32>, GraphSnapshot) {
        let dim = 8;
        let vectors: Vec<f32> = (0..300)
            .flat_map(|i| {
                let mut v: Vec<f32> = (0..dim).map(|d| ((i * 7 + d * 3) as f32).sin()).collect();
                crate::vectors::normalize(&mut v).unwrap();
                v
            })
            .collect();
        let graph = HnswGraph::new(&HnswParams::default(), 300);
        let items: Vec<(&[f32], usize)> = vectors
            .chunks(dim)
            .enumerate()
            .map(|(i, v)| (v, i))
            .collect();
        graph.insert(&items);
        (vectors, graph.snapshot(|_, _| {}).unwrap())
    }

    /// HNSW can leave a point no edge leads to (one inserted late, unlike its neighbours);
    /// such a point is still found, by its own vector first, and still filtered.
    #[test]
    fn a_point_no_edge_leads_to_is_still_found() {
        let (vectors, mut snapshot) = snapshot();
        let orphan = snapshot
            .points
            .iter()
            .position(|p| p.level == 0 && p.data_id > 100)
            .unwrap();
        let ord = snapshot.points[orphan].data_id as u32;
        for point in &mut snapshot.points {
            for list in &mut point.neighbours {
                list.retain(|&n| n as usize != orphan);
            }
        }
        let words = FlatGraph::encode(&snapshot, None, |ord| Some(ord as u32)).unwrap();
        let flat = FlatGraph::from_words(words, 300, 300).unwrap();
        assert_eq!(flat.unreachable(), vec![orphan as u32]);
        let query = &vectors[ord as usize * 8..ord as usize * 8 + 8];
        let found = flat.search(query, 5, 32, RowView::f32(&vectors, 8), None);
        assert_eq!(found[0].0, ord);
        assert!((found[0].1 - 1.0).abs() < 1e-5);
        let others = |o: u32| o != ord;
        let found = flat.search(query, 5, 32, RowView::f32(&vectors, 8), Some(&others));
        assert!(found.iter().all(|&(o, _)| o != ord));
        assert_eq!(found.len(), 5);
    }

    #[test]
    fn search_finds_what_an_exact_scan_finds() {
        let (vectors, words) = graph();
        let flat = FlatGraph::from_words(words, 300, 300).unwrap();
        assert!(
            flat.layer_count() >= 2,
            "a graph of 300 points has upper layers"
        );
        let mut recall = 0usize;
        for q in vectors.chunks(8).step_by(7) {
            let found = flat.search(q, 10, 64, RowView::f32(&vectors, 8), None);
            let mut exact: Vec<(u32, f32)> = vectors
                .chunks(8)
                .enumerate()
                .map(|(i, v)| (i as u32, dot(q, v)))
                .collect();
            exact.sort_by(|a, b| b.1.total_cmp(&a.1));
            recall += found
                .iter()
                .filter(|f| exact[..10].iter().any(|e| e.0 == f.0))
                .count();
            assert!(found.windows(2).all(|p| p[0].1 >= p[1].1), "best first");
        }
        let queries = vectors.chunks(8).step_by(7).count();
        assert!(
            recall as f64 / (10 * queries) as f64 >= 0.95,
            "recall {recall}"
        );
        // A filter keeps only what it accepts, and still finds the best of those.
        let odd = |ord: u32| ord % 2 == 1;
        let found = flat.search(
            &vectors[8 * 11..8 * 12],
            5,
            64,
            RowView::f32(&vectors, 8),
            Some(&odd),
        );
        assert_eq!(found[0].0, 11);
        assert!(found.iter().all(|(ord, _)| ord % 2 == 1));
    }

    #[test]
    fn every_truncation_and_damaged_word_is_an_error_or_a_safe_graph() {
        let (vectors, words) = graph();
        for cut in 0..words.len() {
            assert!(
                FlatGraph::from_words(words[..cut].to_vec(), 300, 300).is_err(),
                "cut {cut}"
            );
        }
        assert!(FlatGraph::from_words(words.clone(), 301, 301).is_err());
        // Any single damaged word either fails the structural check or leaves a graph that
        // searches without panicking.
        let q = &vectors[..8];
        for at in (0..words.len()).step_by(3) {
            for value in [u32::MAX, 299, 300, 0] {
                let mut damaged = words.clone();
                damaged[at] = value;
                if let Ok(g) = FlatGraph::from_words(damaged, 300, 300) {
                    let _ = g.search(q, 5, 32, RowView::f32(&vectors, 8), None);
                }
            }
        }
    }
}
