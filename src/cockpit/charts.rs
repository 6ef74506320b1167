//! Charts as inline SVG, drawn on the server: no script, no external asset; each chart has a
//! title and a description for screen readers, and the page's table holds the same numbers.

use std::fmt::Write;

/// One series of a bar chart: a label and one value per day.
pub struct Series<'a> {
    pub label: &'a str,
    pub colour: &'a str,
    pub values: Vec<i64>,
}

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 180.0;
const PAD_LEFT: f64 = 48.0;
const PAD_BOTTOM: f64 = 22.0;
const PAD_TOP: f64 = 8.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Grouped bars per day (`days` are the x labels, first and last shown), scaled to the
/// largest value; negative values are drawn as zero.
pub fn bars(title: &str, days: &[String], series: &[Series<'_>]) -> String {
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = days.len().max(1) as f64;
    let plot_w = WIDTH - PAD_LEFT - 4.0;
    let plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM;
    let slot = plot_w / n;
    let bar = (slot * 0.8 / series.len().max(1) as f64).max(0.5);
    let total: Vec<String> = series
        .iter()
        .map(|s| format!("{}: {}", s.label, s.values.iter().sum::<i64>()))
        .collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="c-{id}" xmlns="http://www.w3.org/2000/svg"><title id="c-{id}">{title} ({totals})</title>"#,
        id = escape(&title.to_ascii_lowercase().replace(' ', "-")),
        title = escape(title),
        totals = escape(&total.join(", ")),
    );
    // The axis: zero and the largest value.
    let _ = write!(
        svg,
        r##"<line x1="{PAD_LEFT}" y1="{y0}" x2="{WIDTH}" y2="{y0}" stroke="#888"/><text x="{tx}" y="{y0}" font-size="11" text-anchor="end">0</text><text x="{tx}" y="{ym}" font-size="11" text-anchor="end">{max}</text>"##,
        y0 = PAD_TOP + plot_h,
        tx = PAD_LEFT - 4.0,
        ym = PAD_TOP + 10.0,
    );
    for (k, s) in series.iter().enumerate() {
        for (d, v) in s.values.iter().enumerate() {
            let v = (*v).max(0);
            if v == 0 {
                continue;
            }
            let h = plot_h * v as f64 / max as f64;
            let x = PAD_LEFT + slot * d as f64 + slot * 0.1 + bar * k as f64;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}" fill="{c}"><title>{day}: {v} {label}</title></rect>"#,
                y = PAD_TOP + plot_h - h,
                c = escape(s.colour),
                day = escape(days.get(d).map_or("", |s| s.as_str())),
                label = escape(s.label),
            );
        }
    }
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            svg,
            r#"<text x="{PAD_LEFT}" y="{HEIGHT}" font-size="11">{}</text><text x="{WIDTH}" y="{HEIGHT}" font-size="11" text-anchor="end">{}</text>"#,
            escape(first),
            escape(last)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value_and_escape_labels() {
        let days = vec!["2026-01-01".to_string(), "2026-01-02".to_string()];
        let svg = bars(
            "Points <earned>",
            &days,
            &[Series {
                label: "earned",
                colour: "#0a58ca",
                values: vec![10, 20],
            }],
        );
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("Points &lt;earned&gt; (earned: 30)"), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 2);
        // The largest bar fills the plot's height.
        assert!(svg.contains(r#"height="150.0""#), "{svg}");
        assert!(!svg.contains("<earned>"));
    }
}
