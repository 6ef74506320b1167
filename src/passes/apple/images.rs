//! Pass images (`shared/spec/apple-wallet.md` §2): uploads are checked once and resized to the
//! @1x/@2x/@3x PNGs Wallet expects, so building a pass never touches pixels.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, Limits};

/// Largest upload accepted, in bytes.
pub const MAX_UPLOAD_BYTES: usize = 5 * 1024 * 1024;
/// Largest upload accepted, in pixels per side; guards against decompression bombs.
const MAX_SIDE: u32 = 6000;

/// The images a storeCard may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    Icon,
    Logo,
    Strip,
}

impl ImageKind {
    pub const ALL: [ImageKind; 3] = [ImageKind::Icon, ImageKind::Logo, ImageKind::Strip];

    pub fn name(self) -> &'static str {
        match self {
            ImageKind::Icon => "icon",
            ImageKind::Logo => "logo",
            ImageKind::Strip => "strip",
        }
    }

    pub fn parse(s: &str) -> Option<ImageKind> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The @1x box in points (= pixels at @1x).
    fn box_1x(self) -> (u32, u32) {
        match self {
            ImageKind::Icon => (29, 29),
            ImageKind::Logo => (160, 50),
            ImageKind::Strip => (375, 144),
        }
    }

    /// The smallest upload that still fills the @1x box: below it the image would be blurry
    /// even on the oldest devices.
    fn min_size(self) -> (u32, u32) {
        match self {
            ImageKind::Icon => (29, 29),
            // A logo is fitted inside its box, so it only needs to reach one side of it.
            ImageKind::Logo => (50, 20),
            ImageKind::Strip => (375, 144),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("{0} must be PNG or JPEG, at most 5 MB; got {1} bytes")]
    TooLarge(&'static str, usize),
    #[error("{0} must be PNG or JPEG, at most 5 MB; this is neither")]
    NotAnImage(&'static str),
    #[error("{0} could not be decoded: {1}")]
    Corrupt(&'static str, String),
    #[error(
        "{kind} must be at least {min_w}×{min_h} pixels and at most {MAX_SIDE} per side; got {w}×{h}"
    )]
    BadSize {
        kind: &'static str,
        min_w: u32,
        min_h: u32,
        w: u32,
        h: u32,
    },
}

/// One image at the three scales, as `(file name, PNG bytes)`: `icon.png`, `icon@2x.png`, `icon@3x.png`.
pub type ScaledImages = Vec<(String, Vec<u8>)>;

/// Google Wallet's program logo: square, at least 660×660, masked to a circle (`google-wallet.md`
/// §3.6); made from the icon upload, which is square too.
pub const GOOGLE_LOGO: (&str, u32, u32) = ("google/logo.png", 660, 660);
/// Google Wallet's hero image, 1032×336; made from the strip upload.
pub const GOOGLE_HERO: (&str, u32, u32) = ("google/hero.png", 1032, 336);

/// Google Wallet's program logo made from a logo upload: the logo inside the 70 % safe area of
/// a 660×660 square (Google masks it to a circle and asks for a 15 % margin); preferred over
/// the icon's rendition when both exist.
pub const GOOGLE_PROGRAM_LOGO: (&str, u32, u32) = ("google/program-logo.png", 660, 660);
/// Google Wallet's `wideProgramLogo`, 1280×400, made from a logo upload.
pub const GOOGLE_WIDE_LOGO: (&str, u32, u32) = ("google/wide-logo.png", 1280, 400);

/// `img` scaled to fit `inner_w`×`inner_h` (enlarged if smaller), centred on a transparent
/// `w`×`h` canvas.
fn centred_on_canvas(
    img: &DynamicImage,
    w: u32,
    h: u32,
    inner_w: u32,
    inner_h: u32,
) -> DynamicImage {
    let fitted = img.resize(inner_w, inner_h, FilterType::Lanczos3);
    let mut canvas = image::RgbaImage::new(w, h);
    let x = i64::from((w - fitted.width()) / 2);
    let y = i64::from((h - fitted.height()) / 2);
    image::imageops::overlay(&mut canvas, &fitted.to_rgba8(), x, y);
    DynamicImage::ImageRgba8(canvas)
}

/// Checks an upload and renders it at @1x, @2x and @3x for Apple, plus Google's logo (from an
/// icon) or hero image (from a strip).
pub fn process(kind: ImageKind, bytes: &[u8]) -> Result<ScaledImages, ImageError> {
    let name = kind.name();
    if bytes.len() > MAX_UPLOAD_BYTES {
        return Err(ImageError::TooLarge(name, bytes.len()));
    }
    let format = image::guess_format(bytes).map_err(|_| ImageError::NotAnImage(name))?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Err(ImageError::NotAnImage(name));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => ImageError::BadSize {
            kind: name,
            min_w: 0,
            min_h: 0,
            w: MAX_SIDE + 1,
            h: MAX_SIDE + 1,
        },
        other => ImageError::Corrupt(name, other.to_string()),
    })?;
    let (w, h) = (img.width(), img.height());
    let (min_w, min_h) = kind.min_size();
    if w < min_w || h < min_h {
        return Err(ImageError::BadSize {
            kind: name,
            min_w,
            min_h,
            w,
            h,
        });
    }
    let (bw, bh) = kind.box_1x();
    let google: Vec<(String, Vec<u8>)> = match kind {
        ImageKind::Icon => vec![GOOGLE_LOGO],
        ImageKind::Strip => vec![GOOGLE_HERO],
        ImageKind::Logo => vec![],
    }
    .into_iter()
    .map(|(file, w, h)| {
        (
            file.to_string(),
            encode_png(&img.resize_to_fill(w, h, FilterType::Lanczos3)),
        )
    })
    .chain((kind == ImageKind::Logo).then(|| {
        let (file, w, h) = GOOGLE_PROGRAM_LOGO;
        let safe = w * 7 / 10;
        (
            file.to_string(),
            encode_png(&centred_on_canvas(&img, w, h, safe, safe)),
        )
    }))
    .chain((kind == ImageKind::Logo).then(|| {
        let (file, w, h) = GOOGLE_WIDE_LOGO;
        (
            file.to_string(),
            encode_png(&centred_on_canvas(&img, w, h, w, h)),
        )
    }))
    .collect();
    [1u32, 2, 3]
        .into_iter()
        .map(|scale| {
            let (tw, th) = (bw * scale, bh * scale);
            let scaled = match kind {
                // Icons and strips fill their box; the excess is cropped from the centre.
                ImageKind::Icon | ImageKind::Strip => {
                    img.resize_to_fill(tw, th, FilterType::Lanczos3)
                }
                // Logos keep their shape inside the box and are never enlarged.
                ImageKind::Logo => fit_within(&img, tw, th),
            };
            let file = match scale {
                1 => format!("{name}.png"),
                s => format!("{name}@{s}x.png"),
            };
            Ok((file, encode_png(&scaled)))
        })
        .chain(google.into_iter().map(Ok))
        .collect()
}

fn fit_within(img: &DynamicImage, w: u32, h: u32) -> DynamicImage {
    if img.width() <= w && img.height() <= h {
        img.clone()
    } else {
        img.resize(w, h, FilterType::Lanczos3)
    }
}

fn encode_png(img: &DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .expect("PNG encoding into memory cannot fail");
    out.into_inner()
}

/// A solid-colour PNG of the given size with a lighter centre square: used by the demo and tests.
pub fn sample_png(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbaImage::from_fn(w, h, |x, y| {
        let inner = x > w / 4 && x < 3 * w / 4 && y > h / 4 && y < 3 * h / 4;
        let lift = if inner { 60 } else { 0 };
        image::Rgba([
            rgb[0].saturating_add(lift),
            rgb[1].saturating_add(lift),
            rgb[2].saturating_add(lift),
            255,
        ])
    });
    encode_png(&DynamicImage::ImageRgba8(img))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(png: &[u8]) -> (u32, u32) {
        let img = image::load_from_memory(png).unwrap();
        (img.width(), img.height())
    }

    #[test]
    fn resizes_to_apples_sizes() {
        let icon = process(ImageKind::Icon, &sample_png(300, 200, [10, 20, 30])).unwrap();
        let got: Vec<_> = icon.iter().map(|(n, b)| (n.as_str(), dims(b))).collect();
        assert_eq!(
            got,
            [
                ("icon.png", (29, 29)),
                ("icon@2x.png", (58, 58)),
                ("icon@3x.png", (87, 87)),
                ("google/logo.png", (660, 660)),
            ]
        );

        let strip = process(ImageKind::Strip, &sample_png(1200, 400, [1, 2, 3])).unwrap();
        let got: Vec<_> = strip.iter().map(|(n, b)| (n.as_str(), dims(b))).collect();
        assert_eq!(
            got,
            [
                ("strip.png", (375, 144)),
                ("strip@2x.png", (750, 288)),
                ("strip@3x.png", (1125, 432)),
                ("google/hero.png", (1032, 336)),
            ]
        );

        let logo = process(ImageKind::Logo, &sample_png(400, 100, [1, 2, 3])).unwrap();
        assert_eq!(logo.len(), 5);
        assert_eq!(dims(&logo[0].1), (160, 40));
        assert_eq!(
            dims(&logo[2].1),
            (400, 100),
            "a logo is never enlarged for Apple"
        );
        assert_eq!(logo[3].0, "google/program-logo.png");
        assert_eq!(dims(&logo[3].1), (660, 660));
        assert_eq!(logo[4].0, "google/wide-logo.png");
        assert_eq!(dims(&logo[4].1), (1280, 400));
        // The square logo keeps Google's 15 % margin: corners and edges stay transparent, the
        // centre is the logo.
        let square = image::load_from_memory(&logo[3].1).unwrap().to_rgba8();
        assert_eq!(square.get_pixel(330, 80)[3], 0, "above the safe area");
        assert_eq!(square.get_pixel(50, 330)[3], 0, "left of the safe area");
        assert_eq!(square.get_pixel(330, 330)[3], 255, "the logo in the centre");
        let wide = image::load_from_memory(&logo[4].1).unwrap().to_rgba8();
        assert_eq!(wide.get_pixel(640, 200)[3], 255, "the logo in the centre");

        let mut jpeg = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(image::RgbImage::new(600, 600))
            .write_to(&mut jpeg, ImageFormat::Jpeg)
            .unwrap();
        let icon = process(ImageKind::Icon, jpeg.get_ref()).unwrap();
        assert_eq!(dims(&icon[2].1), (87, 87), "JPEG uploads become PNG");
        assert_eq!(image::guess_format(&icon[2].1).unwrap(), ImageFormat::Png);
    }

    #[test]
    fn rejects_images_too_large_in_pixels() {
        let e = process(ImageKind::Strip, &sample_png(6100, 200, [0, 0, 0])).unwrap_err();
        assert!(e.to_string().contains("at most 6000 per side"), "{e}");
        let e = process(ImageKind::Strip, &sample_png(300, 100, [0, 0, 0])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "strip must be at least 375×144 pixels and at most 6000 per side; got 300×100"
        );
    }

    #[test]
    fn rejects_bad_uploads_by_name() {
        let e = process(ImageKind::Logo, b"GIF89a....").unwrap_err();
        assert_eq!(
            e.to_string(),
            "logo must be PNG or JPEG, at most 5 MB; this is neither"
        );
        let big = vec![0u8; MAX_UPLOAD_BYTES + 1];
        assert!(
            process(ImageKind::Logo, &big)
                .unwrap_err()
                .to_string()
                .contains("at most 5 MB")
        );
        let tiny = process(ImageKind::Icon, &sample_png(10, 10, [0, 0, 0])).unwrap_err();
        assert!(
            tiny.to_string()
                .contains("icon must be at least 29×29 pixels"),
            "{tiny}"
        );
        let mut truncated = sample_png(100, 100, [0, 0, 0]);
        truncated.truncate(60);
        assert!(matches!(
            process(ImageKind::Icon, &truncated),
            Err(ImageError::Corrupt(..))
        ));
    }
}
