//! Nearest real map of each map under the RMS pixel distance, by matrix products.
//!
//! The distance of two maps with every pixel finite is ‖a‖² + ‖b‖² − 2 a·b over the pixels, so the
//! a·b of whole blocks of maps come from one matrix product (gemm) instead of a pass over the
//! pixels of every pair. That sum loses digits to cancellation when two maps are close, so it
//! only picks the candidates: every pair whose distance, within a rigorous bound on both the
//! product's rounding and the pixel-by-pixel sum's, could be the smallest is measured again pixel
//! by pixel. The answer is the pixel-by-pixel one, bit for bit, first index on ties. Maps with a
//! blank (non-finite) pixel, or of another size, are compared pixel by pixel with every map.

use ndarray::Array2;
use rayon::prelude::*;

/// Real maps copied into one contiguous block for the products, at most: every query map is
/// copied once per block, which costs about 25 / REAL_BLOCK_MAPS of the products' time.
const REAL_BLOCK_MAPS: usize = 256;
/// Bytes of one block of real maps, at most (fewer maps when they are large).
const REAL_BLOCK_BYTES: usize = 128 << 20;
/// Bytes of one task's query maps copied into one contiguous block.
const QUERY_BLOCK_BYTES: usize = 32 << 20;
/// Bytes of one product's result.
const PRODUCT_BYTES: usize = 8 << 20;

/// Bytes the products hold at most besides the maps, for `real` and `queries` maps of `pixels`
/// pixels: one block of real maps, and one block of query maps and one product per thread.
pub(crate) fn held_bytes(real: usize, queries: usize, pixels: usize) -> f64 {
    let pixels = pixels.max(1);
    let real_rows = real.min((REAL_BLOCK_BYTES / (8 * pixels)).clamp(1, REAL_BLOCK_MAPS));
    let threads = rayon::current_num_threads().max(1);
    let query_rows = queries.min((QUERY_BLOCK_BYTES / (8 * pixels)).max(1));
    (8 * pixels * real_rows + threads * (8 * pixels * query_rows + PRODUCT_BYTES.min(8 * query_rows * real_rows)))
        as f64
}

/// RMS difference over the pixels finite in both maps (blank pixels of real maps are NaN); NaN
/// when they share none.
pub(crate) fn rms(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let (sum, n) = a
        .iter()
        .zip(b.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .fold((0.0, 0usize), |(s, n), (x, y)| (s + (x - y).powi(2), n + 1));
    if n == 0 {
        f64::NAN
    } else {
        (sum / n as f64).sqrt()
    }
}

/// The maps of one set as the products see them: which are whole (every pixel finite, the
/// common size) and their squared norms.
struct Whole {
    whole: Vec<bool>,
    norms: Vec<f64>,
}

impl Whole {
    fn of(maps: &[Array2<f64>], pixels: usize) -> Self {
        let whole: Vec<bool> = maps.iter().map(|m| m.len() == pixels && m.iter().all(|v| v.is_finite())).collect();
        let norms =
            maps.iter().zip(&whole).map(|(m, &w)| if w { m.iter().map(|v| v * v).sum() } else { 0.0 }).collect();
        Whole { whole, norms }
    }
}

/// What one query map has found so far: the smallest upper bound on a mean square distance, and
/// every pair whose lower bound is not above it (index, lower bound, the exact RMS when known).
#[derive(Clone)]
struct Search {
    best_upper: f64,
    candidates: Vec<(usize, f64, Option<f64>)>,
}

impl Search {
    fn new() -> Self {
        Search { best_upper: f64::INFINITY, candidates: Vec::new() }
    }

    fn offer(&mut self, j: usize, lower: f64, upper: f64, exact: Option<f64>) {
        if lower > self.best_upper {
            return;
        }
        if upper < self.best_upper {
            self.best_upper = upper;
        }
        self.candidates.push((j, lower, exact));
        if self.candidates.len() > 64 {
            let best = self.best_upper;
            self.candidates.retain(|c| c.1 <= best);
        }
    }

    /// A pair measured pixel by pixel.
    fn offer_exact(&mut self, j: usize, d: f64) {
        if d.is_finite() {
            self.offer(j, d * d, d * d, Some(d));
        }
    }
}

/// Copies the maps at `indices` into one row-major matrix, a map per row.
fn contiguous(maps: &[Array2<f64>], indices: &[usize], pixels: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(indices.len() * pixels);
    for &i in indices {
        match maps[i].as_slice() {
            Some(s) => out.extend_from_slice(s),
            None => out.extend(maps[i].iter()),
        }
    }
    out
}

/// `dst[q][r] = Σ_k lhs[q][k] · rhs[r][k]` for row-major `lhs` (m × k) and `rhs` (n × k).
fn dots(lhs: &[f64], rhs: &[f64], m: usize, n: usize, k: usize, dst: &mut [f64]) {
    assert!(lhs.len() >= m * k && rhs.len() >= n * k && dst.len() >= m * n);
    // SAFETY: the three slices hold the matrices these sizes and strides describe (checked above),
    // and dst is a distinct mutable slice.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// For each map of `queries`, the nearest map of `real` by [`rms`]: (index, distance) with the
/// first index on ties, skipping the query's own index when `same` (the queries are the real
/// maps). A distance is NaN when every pair shares no finite pixel (index: the first candidate);
/// `None` when there is no other map.
pub(crate) fn nearest(queries: &[Array2<f64>], real: &[Array2<f64>], same: bool) -> Vec<Option<(usize, f64)>> {
    nearest_in_blocks(queries, real, same, Blocks::default())
}

/// How much of the sets one product holds, in bytes (smaller in tests, to split small sets).
#[derive(Clone, Copy)]
struct Blocks {
    real: usize,
    query: usize,
    product: usize,
}

impl Default for Blocks {
    fn default() -> Self {
        Blocks { real: REAL_BLOCK_BYTES, query: QUERY_BLOCK_BYTES, product: PRODUCT_BYTES }
    }
}

fn nearest_in_blocks(
    queries: &[Array2<f64>],
    real: &[Array2<f64>],
    same: bool,
    bytes: Blocks,
) -> Vec<Option<(usize, f64)>> {
    let Some(first) = real.first().or(queries.first()) else { return vec![None; queries.len()] };
    let pixels = first.len().max(1);
    let real_whole = Whole::of(real, pixels);
    let query_whole = if same { None } else { Some(Whole::of(queries, pixels)) };
    let query_whole = query_whole.as_ref().unwrap_or(&real_whole);
    // Relative rounding of a sum over the pixels, generous (a product, a difference and the
    // running sum per term, a few more operations on the bounds), with u = 2⁻⁵³.
    let gamma = 4.0 * (pixels as f64 + 8.0) * (f64::EPSILON / 2.0);

    let whole_real: Vec<usize> = (0..real.len()).filter(|&j| real_whole.whole[j]).collect();
    let broken_real: Vec<usize> = (0..real.len()).filter(|&j| !real_whole.whole[j]).collect();
    // Pairs with a map that is not whole: pixel by pixel.
    let mut searches: Vec<Search> = (0..queries.len())
        .into_par_iter()
        .map(|i| {
            let mut search = Search::new();
            let targets: Box<dyn Iterator<Item = usize>> =
                if query_whole.whole[i] { Box::new(broken_real.iter().copied()) } else { Box::new(0..real.len()) };
            for j in targets.filter(|&j| !(same && j == i)) {
                search.offer_exact(j, rms(&queries[i], &real[j]));
            }
            search
        })
        .collect();

    let threads = rayon::current_num_threads().max(1);
    let query_rows = (bytes.query / (8 * pixels)).clamp(1, queries.len().div_ceil(4 * threads).max(1));
    let real_rows = (bytes.real / (8 * pixels)).clamp(1, REAL_BLOCK_MAPS);
    let product_cols = (bytes.product / (8 * query_rows)).max(1);
    for block in whole_real.chunks(real_rows) {
        let rhs = contiguous(real, block, pixels);
        searches.par_chunks_mut(query_rows).enumerate().for_each(|(chunk, searches)| {
            let start = chunk * query_rows;
            let rows: Vec<usize> = (start..start + searches.len()).filter(|&i| query_whole.whole[i]).collect();
            if rows.is_empty() {
                return;
            }
            let lhs = contiguous(queries, &rows, pixels);
            let mut product = vec![0.0; rows.len() * product_cols.min(block.len())];
            for (part_index, part) in block.chunks(product_cols).enumerate() {
                let offset = part_index * product_cols;
                let part_rhs = &rhs[offset * pixels..(offset + part.len()) * pixels];
                dots(&lhs, part_rhs, rows.len(), part.len(), pixels, &mut product);
                for (q, &i) in rows.iter().enumerate() {
                    let search = &mut searches[i - start];
                    let nq = query_whole.norms[i];
                    for (r, &j) in part.iter().enumerate() {
                        if same && i == j {
                            continue;
                        }
                        let nr = real_whole.norms[j];
                        let sum = nq + nr - 2.0 * product[q * part.len() + r];
                        let error = gamma * (nq + nr);
                        if !(sum.is_finite() && error.is_finite()) {
                            search.offer_exact(j, rms(&queries[i], &real[j]));
                            continue;
                        }
                        let lower = (sum - error).max(0.0) * (1.0 - gamma) / pixels as f64;
                        let upper = (sum + error) * (1.0 + gamma) / pixels as f64;
                        search.offer(j, lower, upper, None);
                    }
                }
            }
        });
    }

    searches
        .into_par_iter()
        .enumerate()
        .map(|(i, search)| {
            let best = search.best_upper;
            let mut candidates: Vec<(usize, f64)> = search
                .candidates
                .into_iter()
                .filter(|c| c.1 <= best)
                .map(|(j, _, exact)| (j, exact.unwrap_or_else(|| rms(&queries[i], &real[j]))))
                .collect();
            candidates.sort_by_key(|c| c.0);
            let found = candidates.into_iter().min_by(|a, b| a.1.total_cmp(&b.1));
            found.or_else(|| (0..real.len()).find(|&j| !(same && j == i)).map(|j| (j, f64::NAN)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The definition: every pair pixel by pixel.
    fn nearest_pairwise(queries: &[Array2<f64>], real: &[Array2<f64>], same: bool) -> Vec<Option<(usize, f64)>> {
        (0..queries.len())
            .map(|i| {
                (0..real.len())
                    .filter(|&j| !(same && j == i))
                    .map(|j| (j, rms(&queries[i], &real[j])))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
            })
            .collect()
    }

    fn noise(rng: &mut rand_chacha::ChaCha8Rng, n: usize, side: usize, scale: f64) -> Vec<Array2<f64>> {
        (0..n).map(|_| Array2::from_shape_fn((side, side), |_| scale * (rng.random::<f64>() - 0.5) + 3.0)).collect()
    }

    #[test]
    fn the_products_find_the_pairwise_answer_bit_for_bit() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut real = noise(&mut rng, 37, 16, 1.0);
        let mut queries = noise(&mut rng, 29, 16, 1.0);
        // Near-copies (cancellation in ‖a‖² + ‖b‖² − 2a·b), exact copies, exact ties between two
        // real maps, a map with blank pixels on each side and one with no pixel in common.
        queries[3] = real[5].mapv(|v| v + 1e-9);
        queries[4] = real[7].clone();
        real[20] = real[7].clone();
        real[11] = real[2].mapv(|v| v + 1e-13);
        real[9][[4, 4]] = f64::NAN;
        queries[8][[0, 1]] = f64::NAN;
        queries[9].fill(f64::NAN);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let (cross, own) = pool.install(|| (nearest(&queries, &real, false), nearest(&real, &real, true)));
            let (cross_pairwise, own_pairwise) =
                (nearest_pairwise(&queries, &real, false), nearest_pairwise(&real, &real, true));
            for (a, b) in cross.iter().zip(&cross_pairwise).chain(own.iter().zip(&own_pairwise)) {
                let (a, b) = (a.unwrap(), b.unwrap());
                assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()), "{a:?} {b:?}");
            }
        }
        let cross = nearest(&queries, &real, false);
        assert_eq!(cross[4].unwrap(), (7, 0.0), "a copy of two equal real maps finds the first");
        assert!(cross[9].unwrap().1.is_nan() && cross[9].unwrap().0 == 0);
    }

    #[test]
    fn blocks_smaller_than_the_sets_give_the_same_answer() {
        // Blocks of 7 real maps, 3 query maps and products of 3 × 2: every split the sets get
        // when they are large, and a last block shorter than the others.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let real = noise(&mut rng, 50, 64, 2.0);
        let queries = noise(&mut rng, 41, 64, 2.0);
        let small = Blocks { real: 7 * 8 * 64 * 64, query: 3 * 8 * 64 * 64, product: 8 * 3 * 2 };
        for bytes in [Blocks::default(), small] {
            assert_eq!(nearest_in_blocks(&queries, &real, false, bytes), nearest_pairwise(&queries, &real, false));
            assert_eq!(nearest_in_blocks(&real, &real, true, bytes), nearest_pairwise(&real, &real, true));
        }
        let mut blank = real.clone();
        blank.iter_mut().for_each(|m| m[[0, 0]] = f64::NAN);
        assert_eq!(nearest(&queries, &blank, false), nearest_pairwise(&queries, &blank, false));
        assert_eq!(nearest(&real[..1], &real[..1], true), vec![None]);
        assert_eq!(nearest(&queries[..2], &[], false), vec![None, None]);
    }

    /// What the products save: `cargo test --release --lib nearest_speed -- --ignored --nocapture`
    /// (MAPS and SIDE in the environment; default 1,024 maps of 128² against as many).
    #[test]
    #[ignore]
    fn nearest_speed() {
        let var = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
        let (n, side) = (var("MAPS", 1024), var("SIDE", 128));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (real, queries) = (noise(&mut rng, n, side, 1.0), noise(&mut rng, n, side, 1.0));
        let t = std::time::Instant::now();
        let products = nearest(&queries, &real, false);
        let fast = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let pairs: Vec<Option<(usize, f64)>> = (0..n)
            .into_par_iter()
            .map(|i| (0..n).map(|j| (j, rms(&queries[i], &real[j]))).min_by(|a, b| a.1.total_cmp(&b.1)))
            .collect();
        let slow = t.elapsed().as_secs_f64();
        let flops = 2.0 * (n * n * side * side) as f64;
        println!(
            "nearest of {n} maps of {side}² among {n}, {} threads: products {fast:.2} s ({:.1} GFLOP/s), \
             every pair pixel by pixel {slow:.2} s",
            rayon::current_num_threads(),
            flops / fast / 1e9
        );
        assert_eq!(products, pairs);
    }
}
