//! How batch inference uses the CPU's threads.
//!
//! candle splits every matrix product over `RAYON_NUM_THREADS` threads (candle-core reads the
//! variable on each product, `utils::get_num_threads`). A ViT or BERT forward pass is many small
//! products (per head, per layer) with elementwise work between them that runs on one thread,
//! so that splitting leaves cores idle: on 2 cores the `small` preset embedded images at 1.3x
//! its 1-thread rate where PyTorch reaches 1.8x. [`DualEncoder::embed_inputs`] and
//! [`DualEncoder::embed_texts`](super::DualEncoder) therefore split a batch into one chunk per
//! rayon thread, and a batch command calls [`one_thread_per_product`] first so that each chunk's
//! products run on its own thread (see `benches/README.md`, embedding row, for the gain).

/// The threads batch inference should use: `RAYON_NUM_THREADS` when set to a positive number,
/// else every core.
fn requested_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Sizes rayon's global pool to the threads asked for (`RAYON_NUM_THREADS`, else every core)
/// and makes candle's matrix products single-threaded, so that batch inference runs one chunk
/// per thread. Returns the pool's thread count.
///
/// Call it first thing in `main`, before any other thread starts: it sets a process
/// environment variable, which is only sound while the process has one thread. Commands that
/// push one batch through autograd (training) should not call it: their products would lose
/// their threads.
pub fn one_thread_per_product() -> usize {
    let threads = requested_threads();
    // Fails only if the global pool was already built, in which case it keeps its size.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    std::env::set_var("RAYON_NUM_THREADS", "1");
    rayon::current_num_threads()
}

/// Runs `f` over `items` in chunks of at most `max_chunk`, and joins the results in order. With
/// `parallel` (the CPU) the items are split into one chunk per rayon thread, which run at once;
/// otherwise (a GPU) the chunks run one after another.
pub(crate) fn map_chunks<T: Sync, R: Send, E: Send>(
    items: &[T],
    parallel: bool,
    max_chunk: usize,
    f: impl Fn(&[T]) -> Result<Vec<R>, E> + Sync,
) -> Result<Vec<R>, E> {
    let chunks = if parallel {
        rayon::current_num_threads().clamp(1, items.len().max(1))
    } else {
        1
    };
    let size = items.len().div_ceil(chunks).clamp(1, max_chunk.max(1));
    if items.len() <= size {
        return f(items);
    }
    let parts: Vec<Result<Vec<R>, E>> = if parallel {
        use rayon::prelude::*;
        items.par_chunks(size).map(&f).collect()
    } else {
        items.chunks(size).map(&f).collect()
    };
    let mut out = Vec::with_capacity(items.len());
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use crate::model::testing::small_model;
    use crate::model::DualEncoder;

    /// A batch gives the same embeddings, in the same order, whether it runs whole on one
    /// thread or split into chunks over three.
    #[test]
    fn chunked_batches_embed_as_whole_ones() {
        let (dir, _, _) = small_model(3, "small left pleural effusion. no pneumothorax.");
        let model = DualEncoder::load(dir.path(), &Device::Cpu).unwrap();
        let p = model.preprocess_config().unwrap();
        let side = p.channels * p.image_size * p.image_size;
        let inputs: Vec<Vec<f32>> = (0..7)
            .map(|i| {
                (0..side)
                    .map(|j| ((i * 31 + j * 7) % 97) as f32 / 97.0 - 0.5)
                    .collect()
            })
            .collect();
        let texts = [
            "small left pleural effusion",
            "no pneumothorax",
            "effusion",
            "left effusion, no pneumothorax. small.",
            "pneumothorax",
        ];
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                (
                    model.embed_inputs(&inputs).unwrap(),
                    model.embed_texts(&texts).unwrap(),
                )
            })
        };
        let (whole_images, whole_texts) = run(1);
        let (split_images, split_texts) = run(3);
        for (whole, split) in [(whole_images, split_images), (whole_texts, split_texts)] {
            assert_eq!(whole.len(), split.len());
            for (a, b) in whole.iter().zip(&split) {
                let diff = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(diff < 1e-5, "max abs diff {diff}");
            }
        }
        // Distinct inputs give distinct embeddings, so the order is checked too.
        assert_ne!(run(3).0[0], run(3).0[1]);
    }
}
