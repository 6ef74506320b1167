//! A member's code drawn in its template's barcode format, as SVG: what the card page and the
//! designer's preview show, and what a cashier's scanner reads off a screen.
//!
//! QR codes come from `qrcode` (already here for join links); PDF417, Aztec and Code 128 from
//! `rxing`'s encoders (a port of ZXing, the reference implementation scanners are tested
//! against), built with only those three symbologies. Both give a grid of modules; one
//! function draws any grid, with the quiet zone each symbology asks for.
//!
//! A value a format cannot carry is a `BarcodeError`, never a panic: Code 128 carries printable
//! ASCII only, and every format has a length beyond which it no longer fits a card.
//! `svg_or_qr` falls back to a QR code, which carries any text, so a card always shows a code.

use std::fmt::Write as _;

use super::BarcodeFormat;

/// Longest value drawn, in bytes: well past our 24-character codes and imported ids, well within
/// each 2D format's capacity, and still a symbol a phone screen shows legibly.
pub const MAX_VALUE_BYTES: usize = 256;
/// Longest Code 128 value: beyond about 48 characters the bars are thinner than a screen's
/// pixels at a card's width.
pub const MAX_CODE128_CHARS: usize = 48;

/// Why a value cannot be drawn in a format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BarcodeError {
    #[error("the code is empty")]
    Empty,
    #[error("the code is longer than {max} bytes, more than a card shows legibly")]
    TooLong { max: usize },
    #[error("Code 128 carries printable ASCII only (letters A-Z, digits, punctuation), not {0:?}")]
    NotAscii(char),
    #[error("a Code 128 barcode holds at most {MAX_CODE128_CHARS} characters on a card")]
    TooLongFor128,
    #[error("the {format} encoder refused the code: {reason}")]
    Encoder {
        format: &'static str,
        reason: String,
    },
}

/// A symbol's modules, row by row (`true` is dark). A 1D symbol has one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub width: u32,
    pub height: u32,
    dark: Vec<bool>,
}

impl Symbol {
    pub fn is_dark(&self, x: u32, y: u32) -> bool {
        self.dark[(y * self.width + x) as usize]
    }

    /// One row: bars, drawn as tall as `BAR_HEIGHT` modules.
    pub fn is_linear(&self) -> bool {
        self.height == 1
    }
}

/// A Code 128's bar height in modules: about a quarter of its width at our code lengths, as
/// printed loyalty cards draw it, and tall enough for a scanner's line to cross at a slant.
const BAR_HEIGHT: u32 = 60;

/// The quiet zone around each symbology, in modules (ISO/IEC 18004 asks 4 for QR, 15417 asks 10
/// for Code 128, 15438 asks 2 for PDF417; Aztec needs none, we leave 2 for the screen's edge).
fn quiet_zone(format: BarcodeFormat) -> u32 {
    match format {
        BarcodeFormat::Qr => 4,
        BarcodeFormat::Code128 => 10,
        BarcodeFormat::Pdf417 | BarcodeFormat::Aztec => 2,
    }
}

/// The symbol for `value` in `format`.
pub fn encode(format: BarcodeFormat, value: &str) -> Result<Symbol, BarcodeError> {
    if value.is_empty() {
        return Err(BarcodeError::Empty);
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(BarcodeError::TooLong {
            max: MAX_VALUE_BYTES,
        });
    }
    match format {
        BarcodeFormat::Qr => {
            let code =
                qrcode::QrCode::new(value.as_bytes()).map_err(|e| BarcodeError::Encoder {
                    format: "QR",
                    reason: e.to_string(),
                })?;
            let width = code.width() as u32;
            let dark = code
                .to_colors()
                .into_iter()
                .map(|c| c == qrcode::Color::Dark)
                .collect();
            Ok(Symbol {
                width,
                height: width,
                dark,
            })
        }
        BarcodeFormat::Code128 => {
            if let Some(c) = value.chars().find(|c| !(' '..='~').contains(c)) {
                return Err(BarcodeError::NotAscii(c));
            }
            if value.len() > MAX_CODE128_CHARS {
                return Err(BarcodeError::TooLongFor128);
            }
            with_rxing(format, value)
        }
        BarcodeFormat::Pdf417 | BarcodeFormat::Aztec => with_rxing(format, value),
    }
}

fn with_rxing(format: BarcodeFormat, value: &str) -> Result<Symbol, BarcodeError> {
    use rxing::Writer as _;
    let (target, name) = match format {
        BarcodeFormat::Pdf417 => (rxing::BarcodeFormat::PDF_417, "PDF417"),
        BarcodeFormat::Aztec => (rxing::BarcodeFormat::AZTEC, "Aztec"),
        BarcodeFormat::Code128 => (rxing::BarcodeFormat::CODE_128, "Code 128"),
        BarcodeFormat::Qr => unreachable!("QR codes are drawn by qrcode"),
    };
    let mut hints = rxing::EncodeHints {
        // Our own quiet zone is added when drawing.
        Margin: Some("0".into()),
        ..Default::default()
    };
    if !value.is_ascii() {
        // Say so with an ECI rather than let the encoder guess ISO-8859-1.
        hints.CharacterSet = Some("UTF-8".into());
    }
    // rxing is a port of Java code that indexes freely: a panic on an input we did not foresee
    // becomes an error here rather than a failed page.
    let matrix = std::panic::catch_unwind(|| {
        rxing::MultiFormatWriter.encode_with_hints(value, &target, 0, 0, &hints)
    })
    .map_err(|_| BarcodeError::Encoder {
        format: name,
        reason: "the encoder failed".into(),
    })?
    .map_err(|e| BarcodeError::Encoder {
        format: name,
        reason: e.to_string(),
    })?;
    let (width, height) = (matrix.getWidth(), matrix.getHeight());
    let mut dark = Vec::with_capacity((width * height) as usize);
    for y in 0..height {
        for x in 0..width {
            dark.push(matrix.get(x, y));
        }
    }
    Ok(Symbol {
        width,
        height,
        dark,
    })
}

/// `value` in `format` as an SVG at least `min_width` pixels wide, each module a whole number of
/// pixels (`crispEdges`), on white with its quiet zone.
pub fn svg(format: BarcodeFormat, value: &str, min_width: u32) -> Result<String, BarcodeError> {
    Ok(draw(&encode(format, value)?, quiet_zone(format), min_width))
}

/// What `svg_or_qr` drew: the SVG, the format it is in, and why the asked format was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drawn {
    pub svg: String,
    pub format: BarcodeFormat,
    pub fallback: Option<BarcodeError>,
}

/// `value` in `format`, or as a QR code when `format` cannot carry it (the reason is kept for
/// the caller to log or show). `None` only when not even a QR code can (an empty or huge value).
pub fn svg_or_qr(format: BarcodeFormat, value: &str, min_width: u32) -> Option<Drawn> {
    match svg(format, value, min_width) {
        Ok(svg) => Some(Drawn {
            svg,
            format,
            fallback: None,
        }),
        Err(e) => svg(BarcodeFormat::Qr, value, min_width)
            .ok()
            .map(|svg| Drawn {
                svg,
                format: BarcodeFormat::Qr,
                fallback: Some(e),
            }),
    }
}

fn draw(symbol: &Symbol, quiet: u32, min_width: u32) -> String {
    let row_height = if symbol.is_linear() { BAR_HEIGHT } else { 1 };
    let (w, h) = (
        symbol.width + 2 * quiet,
        symbol.height * row_height + 2 * quiet,
    );
    let scale = min_width.div_ceil(w).max(1);
    let mut path = String::new();
    for y in 0..symbol.height {
        let mut x = 0;
        while x < symbol.width {
            if !symbol.is_dark(x, y) {
                x += 1;
                continue;
            }
            let start = x;
            while x < symbol.width && symbol.is_dark(x, y) {
                x += 1;
            }
            let _ = write!(
                path,
                "M{} {}h{}v{}h-{}z",
                start + quiet,
                y * row_height + quiet,
                x - start,
                row_height,
                x - start
            );
        }
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {w} {h}" shape-rendering="crispEdges"><rect width="{w}" height="{h}" fill="#fff"/><path fill="#000" d="{path}"/></svg>"##,
        w * scale,
        h * scale,
    )
}

#[cfg(test)]
mod tests;
