//! FITS through cfitsio (the `fitsio` crate's bindings): images and cubes of any BITPIX, scaled
//! (BSCALE/BZERO, unsigned integers), BLANK → NaN, tile-compressed image HDUs, header cards kept.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::path::{Path, PathBuf};

use fitsio::sys;
use ndarray::{ArrayD, IxDyn};

use super::{OutputStack, Source};
use crate::error::{Error, Result};

const IMAGE_HDU: c_int = 0;
const READONLY: c_int = 0;
const FLOAT_IMG: c_int = -32;
const BYTE_IMG: c_int = 8;
const TBYTE: c_int = 11;
const TFLOAT: c_int = 42;

/// An open cfitsio handle, closed on drop.
struct Handle {
    ptr: *mut sys::fitsfile,
    path: PathBuf,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            let mut status = 0;
            // SAFETY: `ptr` is a handle cfitsio opened (non-null checked) and nothing uses it after drop.
            unsafe { sys::ffclos(self.ptr, &mut status) };
        }
    }
}

fn cstring(path: &Path, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Invalid(format!("{}: text contains a NUL byte", path.display())))
}

/// cfitsio's text for a status code plus the most recent message on its error stack.
fn status_text(status: c_int) -> String {
    let mut buf = [0 as c_char; 81];
    // SAFETY: ffgerr writes at most 30 characters + NUL into the 81-byte buffer.
    unsafe { sys::ffgerr(status, buf.as_mut_ptr()) };
    // SAFETY: the buffer was zeroed and ffgerr NUL-terminates what it writes.
    let mut text = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().trim().to_string();
    let mut detail = Vec::new();
    loop {
        let mut msg = [0 as c_char; 81];
        // SAFETY: ffgmsg writes at most 80 characters + NUL into the 81-byte buffer.
        if unsafe { sys::ffgmsg(msg.as_mut_ptr()) } == 0 {
            break;
        }
        // SAFETY: zeroed buffer, NUL-terminated by ffgmsg.
        let m = unsafe { CStr::from_ptr(msg.as_ptr()) }.to_string_lossy().trim().to_string();
        if !m.is_empty() {
            detail.push(m);
        }
    }
    if let Some(first) = detail.first() {
        text.push_str(&format!(" ({first})"));
    }
    text
}

/// cfitsio's error for a status code, [`status_text`] its message (kept as the source of ours).
fn status_error(status: c_int) -> fitsio::errors::FitsError {
    fitsio::errors::FitsError { status, message: status_text(status) }
}

impl Handle {
    fn open(path: &Path) -> Result<Handle> {
        let name = path.to_str().ok_or_else(|| Error::open(path, "file name is not valid UTF-8"))?;
        let c = cstring(path, name)?;
        let mut ptr = std::ptr::null_mut();
        let mut status = 0;
        // ffdkopn: open the named disk file literally (no extended-filename syntax).
        // SAFETY: `c` is a NUL-terminated path alive for the call; cfitsio sets `ptr` only on success (status 0).
        unsafe { sys::ffdkopn(&mut ptr, c.as_ptr(), READONLY, &mut status) };
        if status != 0 {
            // The file starts like FITS (checked before), so a failure here means it is damaged.
            let e = status_error(status);
            return Err(Error::format(path, format!("truncated or corrupt FITS file: {}", e.message)).with_source(e));
        }
        Ok(Handle { ptr, path: path.to_path_buf() })
    }

    fn create(path: &Path) -> Result<Handle> {
        let name = path.to_str().ok_or_else(|| Error::write(path, "file name is not valid UTF-8"))?;
        let c = cstring(path, name)?;
        let mut ptr = std::ptr::null_mut();
        let mut status = 0;
        // SAFETY: as in `open`: a live NUL-terminated path, `ptr` valid only when status is 0.
        unsafe { sys::ffdkinit(&mut ptr, c.as_ptr(), &mut status) };
        if status != 0 {
            return Err(Error::write(path, status_error(status)));
        }
        Ok(Handle { ptr, path: path.to_path_buf() })
    }

    fn check(&self, status: c_int, what: &str) -> Result<()> {
        if status == 0 {
            Ok(())
        } else {
            let e = status_error(status);
            Err(Error::format(&self.path, format!("{what}: {}", e.message)).with_source(e))
        }
    }

    fn num_hdus(&self) -> Result<usize> {
        let mut n = 0;
        let mut status = 0;
        // SAFETY: `self.ptr` is an open handle (a Handle exists only after a successful open/create).
        unsafe { sys::ffthdu(self.ptr, &mut n, &mut status) };
        self.check(status, "cannot count HDUs")?;
        Ok(n as usize)
    }

    /// Moves to HDU `index` (0 = primary) and returns whether it is an image HDU
    /// (tile-compressed images count as images).
    fn goto(&self, index: usize) -> Result<bool> {
        let mut kind = 0;
        let mut status = 0;
        // SAFETY: open handle; out-parameters are local integers.
        unsafe { sys::ffmahd(self.ptr, index as c_int + 1, &mut kind, &mut status) };
        self.check(status, &format!("cannot read HDU {index}"))?;
        let mut status = 0;
        // SAFETY: open handle; out-parameters are local integers.
        unsafe { sys::ffghdt(self.ptr, &mut kind, &mut status) };
        self.check(status, &format!("cannot read HDU {index}"))?;
        Ok(kind == IMAGE_HDU)
    }

    /// (BITPIX as stored, axis lengths in FITS order NAXIS1, NAXIS2, ...).
    fn image_params(&self) -> Result<(i32, Vec<i64>)> {
        let mut bitpix = 0;
        let mut naxis = 0;
        let mut naxes = [0i64; 9];
        let mut status = 0;
        // SAFETY: open handle; cfitsio writes at most `maxdim` = 9 axis lengths into the 9-element array.
        unsafe { sys::ffgiprll(self.ptr, 9, &mut bitpix, &mut naxis, naxes.as_mut_ptr(), &mut status) };
        self.check(status, "cannot read image size")?;
        if naxis > 9 {
            return Err(Error::content(&self.path, format!("image has {naxis} axes")));
        }
        Ok((bitpix, naxes[..naxis as usize].to_vec()))
    }

    /// All header records of the current HDU.
    fn cards(&self) -> Result<Vec<String>> {
        let mut nkeys = 0;
        let mut more = 0;
        let mut status = 0;
        // SAFETY: open handle; out-parameters are local integers.
        unsafe { sys::ffghsp(self.ptr, &mut nkeys, &mut more, &mut status) };
        self.check(status, "cannot read header")?;
        let mut cards = Vec::with_capacity(nkeys as usize);
        for k in 1..=nkeys {
            let mut buf = [0 as c_char; 81];
            // SAFETY: open handle; a header record is 80 characters + NUL, the buffer holds 81.
            unsafe { sys::ffgrec(self.ptr, k, buf.as_mut_ptr(), &mut status) };
            self.check(status, "cannot read header")?;
            // SAFETY: zeroed buffer, NUL-terminated by ffgrec.
            cards.push(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned());
        }
        Ok(cards)
    }

    /// Reads the whole image of the current HDU as f64 with scaling applied and blanks as NaN.
    /// The `count` pixels of the current image HDU as float32: read as float64 (cfitsio applies
    /// BSCALE/BZERO and BLANK there) a chunk at a time and rounded, so that a large image is never
    /// held as float64 whole.
    fn read_pixels(&self, count: usize, what: &str) -> Result<Vec<f32>> {
        const CHUNK: usize = 1 << 20;
        let mut out = Vec::with_capacity(count);
        let mut values = vec![0f64; count.min(CHUNK)];
        while out.len() < count {
            let chunk = &mut values[..(count - out.len()).min(CHUNK)];
            self.read_pixel_range(out.len(), chunk, what)?;
            out.extend(chunk.iter().map(|&v| v as f32));
        }
        Ok(out)
    }

    /// Pixels `first..first + values.len()` (0-based, in file order) of the current image HDU.
    fn read_pixel_range(&self, first: usize, values: &mut [f64], what: &str) -> Result<()> {
        let mut anynul = 0;
        let mut status = 0;
        // nulval = NaN: pixels equal to BLANK (integers) or NaN (floats) come back as NaN.
        // SAFETY: open handle; `values` holds the `values.len()` f64 elements ffgpvd writes.
        unsafe {
            sys::ffgpvd(
                self.ptr,
                1,
                first as i64 + 1,
                values.len() as i64,
                f64::NAN,
                values.as_mut_ptr(),
                &mut anynul,
                &mut status,
            )
        };
        if status != 0 {
            let e = status_error(status);
            let text = &e.message;
            let truncated = matches!(status, 107 | 108 | 252) || text.contains("END");
            let cause = if truncated {
                format!("{what}: truncated or corrupt data ({text})")
            } else {
                format!("{what}: cannot read pixels ({text})")
            };
            return Err(Error::format(&self.path, cause).with_source(e));
        }
        Ok(())
    }
}

/// The value of `key` in a list of 80-character cards (strings unquoted and trimmed).
pub fn card_value(cards: &[String], key: &str) -> Option<String> {
    cards.iter().find_map(|c| {
        let name = c.get(..8).unwrap_or(c).trim_end();
        if !name.eq_ignore_ascii_case(key) || c.get(8..10) != Some("= ") {
            return None;
        }
        Some(parse_value(&c[10..]))
    })
}

fn parse_value(v: &str) -> String {
    let v = v.trim_start();
    if let Some(rest) = v.strip_prefix('\'') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(ch) = chars.next() {
            if ch == '\'' {
                if chars.peek() == Some(&'\'') {
                    out.push('\'');
                    chars.next();
                } else {
                    break;
                }
            } else {
                out.push(ch);
            }
        }
        out.trim_end().to_string()
    } else {
        v.split('/').next().unwrap_or("").trim().to_string()
    }
}

/// HDU label used in messages: `HDU 1 (SCI)`.
fn label(index: usize, cards: &[String]) -> String {
    match card_value(cards, "EXTNAME") {
        Some(n) if !n.is_empty() => format!("HDU {index} ({n})"),
        _ => format!("HDU {index}"),
    }
}

/// One-line summaries of every HDU, for error messages.
fn hdu_list(h: &Handle, n: usize) -> String {
    (0..n)
        .map(|i| {
            let is_image = h.goto(i).unwrap_or(false);
            let cards = h.cards().unwrap_or_default();
            let kind = if is_image { "image" } else { "table" };
            format!("{} {kind}", label(i, &cards))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads one image HDU: the chosen one, or the first that holds an image. Returns the source
/// description and the data in numpy axis order (…, NAXIS2, NAXIS1).
pub fn read(path: &Path, hdu: Option<&super::HduSelector>) -> Result<(Source, ArrayD<f32>)> {
    use super::HduSelector;
    let h = Handle::open(path)?;
    let n = h.num_hdus()?;
    let index = match hdu {
        Some(HduSelector::Index(i)) => {
            if *i >= n {
                return Err(Error::content(path, format!("no HDU {i}: the file has {n} HDU(s): {}", hdu_list(&h, n))));
            }
            *i
        }
        Some(HduSelector::Name(name)) => {
            let mut found = None;
            for i in 0..n {
                h.goto(i)?;
                let cards = h.cards()?;
                let ext = card_value(&cards, "EXTNAME").unwrap_or_default();
                let matches = ext.eq_ignore_ascii_case(name)
                    || (i == 0 && ext.is_empty() && name.eq_ignore_ascii_case("PRIMARY"));
                if matches {
                    found = Some(i);
                    break;
                }
            }
            found.ok_or_else(|| {
                Error::content(path, format!("no HDU named '{name}': the file has {}", hdu_list(&h, n)))
            })?
        }
        None => {
            let mut found = None;
            for i in 0..n {
                if h.goto(i)? && !h.image_params()?.1.is_empty() {
                    found = Some(i);
                    break;
                }
            }
            found.ok_or_else(|| Error::content(path, format!("no HDU holds an image: {}", hdu_list(&h, n))))?
        }
    };
    if !h.goto(index)? {
        let cards = h.cards()?;
        return Err(Error::content(
            path,
            format!(
                "{} is a table, not an image; choose an image HDU with --hdu (`hdu` in a run config)",
                label(index, &cards)
            ),
        ));
    }
    let cards = h.cards()?;
    let location = label(index, &cards);
    let (_bitpix, naxes) = h.image_params()?;
    if naxes.is_empty() {
        return Err(Error::content(path, format!("{location} holds no data (NAXIS = 0)")));
    }
    let count: i64 = naxes.iter().product();
    let shape: Vec<usize> = naxes.iter().rev().map(|&a| a as usize).collect();
    let values = if count == 0 { Vec::new() } else { h.read_pixels(count as usize, &location)? };
    let data = ArrayD::from_shape_vec(IxDyn(&shape), values).expect("pixel count matches shape");
    let units = card_value(&cards, "BUNIT").filter(|u| !u.is_empty());
    Ok((
        Source {
            path: path.to_path_buf(),
            format: super::Format::Fits,
            location,
            units,
            cards,
            attrs: Default::default(),
        },
        data,
    ))
}

/// A summary of one HDU for `expanse inspect`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HduSummary {
    pub index: usize,
    pub name: Option<String>,
    pub kind: String,
    pub bitpix: Option<i32>,
    /// Axis lengths in numpy order.
    pub shape: Vec<usize>,
    pub compressed: bool,
    pub cards: Vec<String>,
}

/// Lists the HDUs of a FITS file.
pub fn list_hdus(path: &Path) -> Result<Vec<HduSummary>> {
    let h = Handle::open(path)?;
    let n = h.num_hdus()?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let is_image = h.goto(i)?;
        let cards = h.cards()?;
        let name = card_value(&cards, "EXTNAME").filter(|s| !s.is_empty());
        let compressed = card_value(&cards, "ZIMAGE").map(|v| v == "T").unwrap_or(false);
        let (kind, bitpix, shape) = if is_image {
            let (bitpix, naxes) = h.image_params()?;
            // BITPIX as the data reads: unsigned 16/32-bit and scaled integers reported as stored.
            ("image".to_string(), Some(bitpix), naxes.iter().rev().map(|&a| a as usize).collect())
        } else {
            let xt = card_value(&cards, "XTENSION").unwrap_or_else(|| "table".into());
            (xt.to_lowercase(), None, Vec::new())
        };
        out.push(HduSummary { index: i, name, kind, bitpix, shape, compressed, cards });
    }
    Ok(out)
}

/// WCS and other geometry-bound keywords worth copying when the pixel grid is unchanged.
pub fn wcs_cards(cards: &[String]) -> Vec<String> {
    const EXACT: &[&str] = &[
        "WCSAXES", "RADESYS", "RADECSYS", "EQUINOX", "EPOCH", "LONPOLE", "LATPOLE", "MJD-OBS", "DATE-OBS", "WCSNAME",
        "RESTFRQ", "RESTFREQ", "SPECSYS",
    ];
    const PREFIX: &[&str] = &["CTYPE", "CRPIX", "CRVAL", "CDELT", "CUNIT", "CROTA", "CD", "PC", "PV", "PS"];
    cards
        .iter()
        .filter(|c| {
            let key = c.get(..8).unwrap_or(c).trim_end();
            if c.get(8..10) != Some("= ") {
                return false;
            }
            EXACT.contains(&key)
                || PREFIX.iter().any(|p| {
                    key.strip_prefix(p)
                        .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|ch| ch.is_ascii_digit() || ch == '_'))
                })
        })
        .cloned()
        .collect()
}

/// The WCS cards of an image (`cards`, see [`wcs_cards`]) for a map cut out of it and resampled:
/// rows `r0..r0+h` and columns `c0..c0+w` of the image (0-based, numpy order: FITS axis 1 is the
/// column) resampled to `out_h` × `out_w` pixels, each new pixel covering the same area. CRPIX
/// moves and scales, CDELTi and the columns of CDi_j scale by the pixel size; CRVAL, CTYPE, PC and
/// the rest are unchanged. Only 2-D celestial or linear WCS (axes 1 and 2) is rescaled.
pub fn resampled_wcs_cards(cards: &[String], region: [usize; 4], out_h: usize, out_w: usize) -> Vec<String> {
    let [r0, c0, h, w] = region;
    let scale = [w as f64 / out_w.max(1) as f64, h as f64 / out_h.max(1) as f64];
    let offset = [c0 as f64, r0 as f64];
    wcs_cards(cards)
        .into_iter()
        .map(|card| {
            let key = card.get(..8).unwrap_or(&card).trim_end().to_string();
            let value = || card_value(std::slice::from_ref(&card), &key).and_then(|v| v.trim().parse::<f64>().ok());
            let axis =
                |k: &str| key.strip_prefix(k).and_then(|a| a.parse::<usize>().ok()).filter(|a| (1..=2).contains(a));
            let comment = "expanse: rescaled to the resampled grid";
            if let (Some(a), Some(v)) = (axis("CRPIX"), value()) {
                return format_card(&key, CardValue::Float((v - 0.5 - offset[a - 1]) / scale[a - 1] + 0.5), comment);
            }
            if let (Some(a), Some(v)) = (axis("CDELT"), value()) {
                return format_card(&key, CardValue::Float(v * scale[a - 1]), comment);
            }
            if let Some((_, j)) = key.strip_prefix("CD").and_then(|ij| ij.split_once('_')) {
                if let (Ok(j), Some(v)) = (j.parse::<usize>(), value()) {
                    if (1..=2).contains(&j) {
                        return format_card(&key, CardValue::Float(v * scale[j - 1]), comment);
                    }
                }
            }
            card
        })
        .collect()
}

/// Writes a float32 image/cube (primary HDU) with BUNIT, copied cards, provenance HISTORY cards
/// and, when given, a `MASK` uint8 extension (1 = blank).
pub fn write(path: &Path, out: &OutputStack) -> Result<()> {
    let h = Handle::create(path)?;
    let werr = |status: c_int, what: &str| -> Result<()> {
        if status == 0 {
            Ok(())
        } else {
            let e = status_error(status);
            Err(Error::write(path, format!("{what}: {}", e.message)).with_source(e))
        }
    };
    let data = out.data.as_standard_layout();
    let mut naxes: Vec<i64> = data.shape().iter().rev().map(|&a| a as i64).collect();
    let mut status = 0;
    // SAFETY: open handle; `naxes` holds exactly `naxis` lengths.
    unsafe { sys::ffcrimll(h.ptr, FLOAT_IMG, naxes.len() as c_int, naxes.as_mut_ptr(), &mut status) };
    werr(status, "cannot create image")?;
    let mut values: Vec<f32> = data.iter().copied().collect();
    // SAFETY: open handle; `values` holds the `len` f32 (TFLOAT) elements cfitsio reads.
    unsafe { sys::ffppr(h.ptr, TFLOAT, 1, values.len() as i64, values.as_mut_ptr().cast(), &mut status) };
    werr(status, "cannot write pixels")?;
    if let Some(u) = &out.units {
        put_string(&h, "BUNIT", u, "physical units of the pixel values")?;
    }
    put_string(&h, "DATE", &file_date(), "UTC date the file was written")?;
    for card in &out.fits_cards {
        let c = cstring(path, card)?;
        // SAFETY: open handle; `c` is a live NUL-terminated card.
        unsafe { sys::ffprec(h.ptr, c.as_ptr(), &mut status) };
        werr(status, "cannot copy header card")?;
    }
    put_string(&h, "ORIGIN", &out.provenance.tool, "software that wrote this file")?;
    put_string(&h, "EXPCMD", &out.provenance.command, "expanse command")?;
    for line in provenance_lines(out.provenance) {
        let c = cstring(path, &line)?;
        // SAFETY: open handle; `c` is a live NUL-terminated line.
        unsafe { sys::ffphis(h.ptr, c.as_ptr(), &mut status) };
        werr(status, "cannot write HISTORY")?;
    }
    // The full provenance as JSON in a long-string keyword (CONTINUE convention).
    let json = serde_json::to_string(out.provenance).expect("provenance serializes");
    let key = cstring(path, "EXPPROV")?;
    let val = cstring(path, &json)?;
    let com = cstring(path, "expanse provenance (JSON)")?;
    // SAFETY: open handle; no pointers passed but the status.
    unsafe { sys::ffplsw(h.ptr, &mut status) };
    // SAFETY: open handle; key, value and comment are live NUL-terminated strings.
    unsafe { sys::ffpkls(h.ptr, key.as_ptr(), val.as_ptr(), com.as_ptr(), &mut status) };
    werr(status, "cannot write provenance")?;
    if let Some(mask) = &out.mask {
        let mask = mask.as_standard_layout();
        let mut maxes: Vec<i64> = mask.shape().iter().rev().map(|&a| a as i64).collect();
        // SAFETY: open handle; `maxes` holds exactly `naxis` lengths.
        unsafe { sys::ffcrimll(h.ptr, BYTE_IMG, maxes.len() as c_int, maxes.as_mut_ptr(), &mut status) };
        werr(status, "cannot create MASK extension")?;
        let mut bytes: Vec<u8> = mask.iter().copied().collect();
        // SAFETY: open handle; `bytes` holds the `len` u8 (TBYTE) elements cfitsio reads.
        unsafe { sys::ffppr(h.ptr, TBYTE, 1, bytes.len() as i64, bytes.as_mut_ptr().cast(), &mut status) };
        werr(status, "cannot write MASK")?;
        put_string(&h, "EXTNAME", "MASK", "1 = blank (NaN) pixel in the source map")?;
    }
    let ptr = h.ptr;
    std::mem::forget(h);
    // SAFETY: `ptr` came from the forgotten Handle, so it is closed exactly once, here.
    unsafe { sys::ffclos(ptr, &mut status) };
    werr(status, "cannot close file")
}

fn put_string(h: &Handle, key: &str, value: &str, comment: &str) -> Result<()> {
    let k = cstring(&h.path, key)?;
    let v = cstring(&h.path, value)?;
    let c = cstring(&h.path, comment)?;
    let mut status = 0;
    // SAFETY: open handle; key, value and comment are live NUL-terminated strings.
    unsafe { sys::ffukys(h.ptr, k.as_ptr(), v.as_ptr(), c.as_ptr(), &mut status) };
    if status != 0 {
        let e = status_error(status);
        return Err(Error::write(&h.path, format!("cannot write {key}: {}", e.message)).with_source(e));
    }
    Ok(())
}

/// The `DATE` of a file written now: UTC `YYYY-MM-DDThh:mm:ss`, or the time in
/// `SOURCE_DATE_EPOCH` (seconds since 1970) when it is set, so that reruns can give the same bytes.
pub fn file_date() -> String {
    let secs =
        std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
        });
    let stamp = crate::runtime::utc_stamp(secs);
    String::from_utf8_lossy(&stamp[..19]).into_owned()
}

/// The cards of `cards` that give the pixel scale and nothing about where on the sky the map
/// is: CDELTi, CUNITi, CDi_j and PCi_j of axes 1 and 2 (no CRVAL, CRPIX or CTYPE).
pub fn pixel_scale_cards(cards: &[String]) -> Vec<String> {
    wcs_cards(cards)
        .into_iter()
        .filter(|c| {
            let key = c.get(..8).unwrap_or(c).trim_end();
            let axis = |p: &str| key.strip_prefix(p).is_some_and(|a| a == "1" || a == "2");
            let matrix = |p: &str| key.strip_prefix(p).is_some_and(|ij| matches!(ij, "1_1" | "1_2" | "2_1" | "2_2"));
            axis("CDELT") || axis("CUNIT") || matrix("CD") || matrix("PC")
        })
        .collect()
}

/// Human-readable provenance, one HISTORY line each (cfitsio wraps long lines).
pub fn provenance_lines(p: &super::Provenance) -> Vec<String> {
    let mut lines = vec![format!("{} {}", p.tool, p.command)];
    // Synthetic maps come from the domain's prior, not from any one input map.
    let synthetic = p.records.contains_key("sampling");
    if synthetic && !p.sources.is_empty() {
        lines.push("synthetic maps: each drawn from the prior fitted to all of the domain's inputs:".into());
    }
    for s in &p.sources {
        lines.push(if synthetic { format!("domain input: {s}") } else { format!("source: {s}") });
    }
    if let Some(u) = &p.units {
        lines.push(format!("source units: {u}"));
    }
    for (k, v) in &p.records {
        lines.push(format!("{k}: {v}"));
    }
    lines
}

/// Reads the provenance JSON written by [`write()`] (keyword EXPPROV), if present.
pub fn read_provenance(path: &Path) -> Result<Option<super::Provenance>> {
    let h = Handle::open(path)?;
    h.goto(0)?;
    let key = cstring(path, "EXPPROV")?;
    let mut value: *mut c_char = std::ptr::null_mut();
    let mut status = 0;
    // SAFETY: open handle; cfitsio allocates `value` (freed below with fffree); a null comment pointer is allowed.
    unsafe { sys::ffgkls(h.ptr, key.as_ptr(), &mut value, std::ptr::null_mut(), &mut status) };
    if status == 202 {
        return Ok(None);
    }
    h.check(status, "cannot read EXPPROV")?;
    // SAFETY: status 0 here, so `value` is cfitsio's NUL-terminated allocation.
    let text = unsafe { CStr::from_ptr(value) }.to_string_lossy().into_owned();
    // SAFETY: `value` was allocated by ffgkls and is not used afterwards.
    unsafe { sys::fffree(value.cast(), &mut status) };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::format(path, format!("EXPPROV is not valid provenance JSON: {e}")).with_source(e))
}

/// Formats a FITS header card `KEY = value / comment` (80 characters; strings quoted).
pub fn format_card(key: &str, value: CardValue, comment: &str) -> String {
    let v = match value {
        CardValue::Str(s) => {
            let quoted = format!("'{:<8}'", s.replace('\'', "''"));
            format!("{quoted:<20}")
        }
        CardValue::Int(i) => format!("{i:>20}"),
        CardValue::Float(x) => {
            let mut t = format!("{x:E}");
            if !t.contains('.') {
                t = t.replacen('E', ".0E", 1);
            }
            format!("{t:>20}")
        }
    };
    let mut card = format!("{:<8}= {v}", key.to_uppercase());
    if !comment.is_empty() {
        card.push_str(" / ");
        card.push_str(comment);
    }
    card.truncate(80);
    format!("{card:<80}")
}

/// A value for [`format_card`].
#[derive(Debug, Clone)]
pub enum CardValue {
    Str(String),
    Int(i64),
    Float(f64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_format_and_parse_back() {
        let c = format_card("bunit", CardValue::Str("cm-2".into()), "column density");
        assert_eq!(c.len(), 80);
        assert!(c.starts_with("BUNIT   = 'cm-2    '"));
        assert_eq!(card_value(&[c], "BUNIT").as_deref(), Some("cm-2"));
        let f = format_card("SIMMEAN", CardValue::Float(1e21), "");
        assert_eq!(card_value(&[f], "SIMMEAN").unwrap().parse::<f64>().unwrap(), 1e21);
        let q = format_card("OBJECT", CardValue::Str("O'Neil cloud".into()), "");
        assert_eq!(card_value(&[q], "OBJECT").as_deref(), Some("O'Neil cloud"));
    }

    #[test]
    fn a_resampled_cut_out_keeps_the_sky_position_of_every_pixel() {
        let card = |k: &str, v: f64| format_card(k, CardValue::Float(v), "");
        let cards = vec![
            card("CRPIX1", 100.5),
            card("CRPIX2", 50.0),
            card("CDELT1", -0.001),
            card("CDELT2", 0.002),
            card("CD1_2", 0.5),
            card("CRVAL1", 150.0),
        ];
        // Rows 20..60 and columns 40..120 of the image, resampled to 20 x 20 pixels.
        let out = resampled_wcs_cards(&cards, [20, 40, 40, 80], 20, 20);
        let get = |k: &str| card_value(&out, k).unwrap().trim().parse::<f64>().unwrap();
        // Old pixel x (1-based) seen at new pixel x' = (x - 0.5 - 40) / 4 + 0.5.
        assert!((get("CRPIX1") - ((100.5 - 0.5 - 40.0) / 4.0 + 0.5)).abs() < 1e-12);
        assert!((get("CRPIX2") - ((50.0 - 0.5 - 20.0) / 2.0 + 0.5)).abs() < 1e-12);
        assert!((get("CDELT1") + 0.004).abs() < 1e-15 && (get("CDELT2") - 0.004).abs() < 1e-15);
        assert!((get("CD1_2") - 1.0).abs() < 1e-15, "column 2 scales with axis 2");
        assert_eq!(get("CRVAL1"), 150.0);
        // The world position of a pixel centre is unchanged: old x = 60 is new x' = 5.375.
        let old_offset = (60.0 - 100.5) * -0.001;
        let new_offset = ((60.0 - 0.5 - 40.0) / 4.0 + 0.5 - get("CRPIX1")) * get("CDELT1");
        assert!((old_offset - new_offset).abs() < 1e-12);
    }

    #[test]
    fn an_image_larger_than_a_read_chunk_reads_whole() {
        // 1.26 M pixels: two chunks of 2^20 and a partial third, a blank pixel in the second.
        let data = ndarray::Array3::from_shape_fn((3, 700, 600), |(p, y, x)| {
            if (p, y, x) == (2, 347, 301) {
                f32::NAN
            } else {
                (p * 1_000_000 + y * 1000 + x) as f32 * 0.37
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.fits");
        let provenance = super::super::Provenance::default();
        let out = super::super::OutputStack {
            data: data.view().into_dyn(),
            mask: None,
            units: None,
            provenance: &provenance,
            fits_cards: Vec::new(),
        };
        write(&path, &out).unwrap();
        let (_, back) = read(&path, None).unwrap();
        assert_eq!(back.shape(), [3, 700, 600]);
        let same = back.iter().zip(data.iter()).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
        assert!(same && back[[2, 347, 301]].is_nan());
    }

    #[test]
    fn wcs_cards_are_recognized() {
        let cards: Vec<String> = ["CTYPE1", "CRPIX2", "CD1_2", "PC2_1", "BUNIT", "CDELT1", "CDELTA"]
            .iter()
            .map(|k| format_card(k, CardValue::Float(1.0), ""))
            .collect();
        let keys: Vec<String> = wcs_cards(&cards).iter().map(|c| c[..8].trim().to_string()).collect();
        assert_eq!(keys, ["CTYPE1", "CRPIX2", "CD1_2", "PC2_1", "CDELT1"]);
    }
}
