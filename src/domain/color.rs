//! Colours. Apple specifies `rgb(r, g, b)` strings; designers type `#rrggbb` too.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// Accepts `#rrggbb`, `#rgb` and `rgb(r, g, b)`.
    pub fn parse(input: &str) -> Option<Rgb> {
        let s = input.trim();
        if let Some(hex) = s.strip_prefix('#') {
            let digits: Vec<u8> = hex
                .chars()
                .map(|c| c.to_digit(16).map(|d| d as u8))
                .collect::<Option<_>>()?;
            return match digits.as_slice() {
                [r, g, b] => Some(Rgb(r * 17, g * 17, b * 17)),
                [r1, r2, g1, g2, b1, b2] => Some(Rgb(r1 * 16 + r2, g1 * 16 + g2, b1 * 16 + b2)),
                _ => None,
            };
        }
        let inner = s.strip_prefix("rgb(")?.strip_suffix(')')?;
        let parts: Vec<u8> = inner
            .split(',')
            .map(|p| p.trim().parse::<u8>().ok())
            .collect::<Option<_>>()?;
        match parts.as_slice() {
            [r, g, b] => Some(Rgb(*r, *g, *b)),
            _ => None,
        }
    }
}

/// Apple's form, `rgb(r, g, b)`.
impl fmt::Display for Rgb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rgb({}, {}, {})", self.0, self.1, self.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms_and_rejects_the_rest() {
        assert_eq!(Rgb::parse("#3c414c"), Some(Rgb(60, 65, 76)));
        assert_eq!(Rgb::parse("#fff"), Some(Rgb(255, 255, 255)));
        assert_eq!(Rgb::parse("rgb(60, 65,76)"), Some(Rgb(60, 65, 76)));
        assert_eq!(Rgb(60, 65, 76).to_string(), "rgb(60, 65, 76)");
        for bad in ["blue", "#12345", "rgb(256, 0, 0)", "rgb(1,2)", "#ggg", ""] {
            assert_eq!(Rgb::parse(bad), None, "{bad}");
        }
    }
}
