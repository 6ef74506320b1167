use super::*;

const CODE: &str = "T7K2Q9XW4M8R3P6V1N5B0C2D";

/// The modules an SVG of ours paints, read back from its path: each `M x y h w v rh h -w z`
/// is a run of dark modules `w` wide in row `y / rh`.
/// A rectangle painted: x, y, width, height in modules.
type Run = (u32, u32, u32, u32);

fn painted(svg: &str) -> (u32, u32, Vec<Run>) {
    let attr = |name: &str| -> u32 {
        let at = svg.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        svg[at..].split('"').next().unwrap().parse().unwrap()
    };
    let d = svg
        .split(" d=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let runs = d
        .split('M')
        .filter(|r| !r.is_empty())
        .map(|r| {
            let nums: Vec<u32> = r
                .trim_end_matches('z')
                .split([' ', 'h', 'v', '-'])
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            assert_eq!(nums.len(), 5, "{r}");
            (nums[0], nums[1], nums[2], nums[3])
        })
        .collect();
    (attr("width"), attr("height"), runs)
}

/// The SVG as a scanner sees it: grey levels, `scale` pixels per module.
fn raster(svg: &str) -> (Vec<u8>, u32, u32) {
    let (width, height, runs) = painted(svg);
    let vb: Vec<u32> = svg
        .split("viewBox=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let scale = width / vb[2];
    assert_eq!(width, vb[2] * scale, "whole pixels per module");
    assert_eq!(height, vb[3] * scale, "whole pixels per module");
    let mut luma = vec![255u8; (width * height) as usize];
    for (x, y, w, h) in runs {
        for py in y * scale..(y + h) * scale {
            for px in x * scale..(x + w) * scale {
                luma[(py * width + px) as usize] = 0;
            }
        }
    }
    (luma, width, height)
}

fn decode(svg: &str, format: rxing::BarcodeFormat) -> String {
    let (luma, w, h) = raster(svg);
    rxing::helpers::detect_in_luma(luma, w, h, Some(format))
        .unwrap_or_else(|e| panic!("{format:?} does not decode: {e}"))
        .getText()
        .to_string()
}

#[test]
fn every_format_draws_a_symbol_that_decodes_to_the_code() {
    for (format, theirs) in [
        (BarcodeFormat::Qr, rxing::BarcodeFormat::QR_CODE),
        (BarcodeFormat::Pdf417, rxing::BarcodeFormat::PDF_417),
        (BarcodeFormat::Aztec, rxing::BarcodeFormat::AZTEC),
        (BarcodeFormat::Code128, rxing::BarcodeFormat::CODE_128),
    ] {
        let svg = svg(format, CODE, 180).unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains("shape-rendering=\"crispEdges\""));
        let (width, _, _) = painted(&svg);
        assert!(width >= 180, "{format:?}: {width} px wide");
        assert_eq!(decode(&svg, theirs), CODE, "{format:?}");
    }
}

#[test]
fn each_format_has_its_shape() {
    let qr = encode(BarcodeFormat::Qr, CODE).unwrap();
    assert_eq!(qr.width, qr.height);
    let aztec = encode(BarcodeFormat::Aztec, CODE).unwrap();
    assert_eq!(aztec.width, aztec.height);
    // Aztec's bullseye: the centre module is dark.
    assert!(aztec.is_dark(aztec.width / 2, aztec.height / 2));
    let pdf = encode(BarcodeFormat::Pdf417, CODE).unwrap();
    assert!(pdf.width > pdf.height, "PDF417 is wide");
    let bars = encode(BarcodeFormat::Code128, CODE).unwrap();
    assert!(bars.is_linear());
    // Code 128 starts with a bar and ends with the stop pattern's final bar.
    assert!(bars.is_dark(0, 0) && bars.is_dark(bars.width - 1, 0));
    let svg = svg(BarcodeFormat::Code128, CODE, 1).unwrap();
    let (w, h, _) = painted(&svg);
    assert_eq!((w, h), (bars.width + 20, BAR_HEIGHT + 20), "1 px a module");
}

#[test]
fn text_beyond_ascii_is_carried_by_2d_formats() {
    let value = "Zoë-Müller-42";
    for (format, theirs) in [
        (BarcodeFormat::Qr, rxing::BarcodeFormat::QR_CODE),
        (BarcodeFormat::Pdf417, rxing::BarcodeFormat::PDF_417),
        (BarcodeFormat::Aztec, rxing::BarcodeFormat::AZTEC),
    ] {
        let svg = svg(format, value, 100).unwrap();
        assert_eq!(decode(&svg, theirs), value, "{format:?}");
    }
}

#[test]
fn what_a_format_cannot_carry_is_an_error_and_the_card_falls_back_to_qr() {
    assert_eq!(
        encode(BarcodeFormat::Code128, "Zoë").unwrap_err(),
        BarcodeError::NotAscii('ë')
    );
    assert_eq!(
        encode(BarcodeFormat::Code128, "tab\there").unwrap_err(),
        BarcodeError::NotAscii('\t')
    );
    assert_eq!(
        encode(BarcodeFormat::Code128, &"9".repeat(49)).unwrap_err(),
        BarcodeError::TooLongFor128
    );
    for format in BarcodeFormat::ALL {
        assert_eq!(encode(format, "").unwrap_err(), BarcodeError::Empty);
        assert_eq!(
            encode(format, &"x".repeat(MAX_VALUE_BYTES + 1)).unwrap_err(),
            BarcodeError::TooLong {
                max: MAX_VALUE_BYTES
            }
        );
    }
    let message = BarcodeError::NotAscii('ë').to_string();
    assert!(message.contains("printable ASCII"), "{message}");

    let drawn = svg_or_qr(BarcodeFormat::Code128, "Zoë", 120).unwrap();
    assert_eq!(drawn.format, BarcodeFormat::Qr);
    assert_eq!(drawn.fallback, Some(BarcodeError::NotAscii('ë')));
    assert_eq!(decode(&drawn.svg, rxing::BarcodeFormat::QR_CODE), "Zoë");
    let fine = svg_or_qr(BarcodeFormat::Aztec, CODE, 120).unwrap();
    assert_eq!((fine.format, fine.fallback), (BarcodeFormat::Aztec, None));
    assert!(svg_or_qr(BarcodeFormat::Code128, "", 120).is_none());
}
