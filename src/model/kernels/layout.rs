//! Channel concatenation and nearest-neighbour upsampling.

use super::*;

/// Concatenation of two contiguous (B, C₁, …) and (B, C₂, …) arrays along the channels.
pub struct ChannelConcat;

impl CustomOp2 for ChannelConcat {
    fn name(&self) -> &'static str {
        "expanse-concat"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (input(s1, l1, "concat")?, input(s2, l2, "concat")?);
        let (da, db) = (l1.shape().dims(), l2.shape().dims());
        if da.len() < 2 || da.len() != db.len() || da[0] != db[0] || da[2..] != db[2..] {
            return Err(candle_core::Error::Msg(format!(
                "concat: shapes {da:?} and {db:?} do not join along channels"
            )));
        }
        let batch = da[0];
        let (ia, ib) = (a.len() / batch.max(1), b.len() / batch.max(1));
        let mut out = vec![0f32; a.len() + b.len()];
        out.par_chunks_mut(ia + ib).enumerate().for_each(|(i, o)| {
            o[..ia].copy_from_slice(&a[i * ia..(i + 1) * ia]);
            o[ia..].copy_from_slice(&b[i * ib..(i + 1) * ib]);
        });
        let mut dims = da.to_vec();
        dims[1] += db[1];
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// Nearest-neighbour upsampling ×2 of a contiguous (B, C, H, W) array.
pub struct Upsample2x;

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "expanse-upsample2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input(s, l, "upsample")?;
        let (b, c, h, w) = l.shape().dims4()?;
        let mut out = vec![0f32; b * c * 4 * h * w];
        out.par_chunks_mut(4 * h * w).zip(x.par_chunks(h * w)).for_each(|(o, src)| {
            for y in 0..h {
                let row = &src[y * w..(y + 1) * w];
                let (top, rest) = o[2 * y * 2 * w..].split_at_mut(2 * w);
                for (x2, v) in top.chunks_mut(2).zip(row) {
                    x2[0] = *v;
                    x2[1] = *v;
                }
                rest[..2 * w].copy_from_slice(top);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, c, 2 * h, 2 * w))))
    }
}
