//! Line charts as standalone SVG files: each device's score per round (and the LLM's), as a
//! run's `plots/` folder holds them. Plain text out, no drawing library.

#![warn(missing_docs)]

use std::fmt::Write;

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// `(round, value in %)`; rounds without a value are skipped.
    pub points: Vec<(usize, f64)>,
    /// Drawn dashed (the LLM, the DPMs).
    pub dashed: bool,
}

const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round-by-score line chart titled `title`, `y_label` on the vertical axis.
pub fn line_chart(title: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h) = (720.0f64, 420.0f64);
    let (left, right, top, bottom) = (60.0, 220.0, 40.0, 50.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let max_round = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .max()
        .unwrap_or(1)
        .max(1);
    let max_value = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    // A round number of percent above the highest value.
    let step = [1.0, 2.0, 5.0, 10.0, 20.0, 25.0]
        .into_iter()
        .find(|s| max_value / s <= 6.0)
        .unwrap_or(25.0);
    let top_value = ((max_value / step).floor() + 1.0) * step;
    let x = |r: usize| left + pw * r as f64 / max_round as f64;
    let y = |v: f64| top + ph * (1.0 - v / top_value);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        escape(title)
    );
    let mut v = 0.0;
    while v <= top_value + 1e-9 {
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v}</text>"##,
            left + pw,
            left - 6.0,
            yy + 4.0
        );
        v += step;
    }
    for r in 0..=max_round {
        let xx = x(r);
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{r}</text>"##,
            top + ph,
            top + ph + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">round</text>"#,
        left + pw / 2.0,
        h - 12.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        top + ph / 2.0,
        top + ph / 2.0,
        escape(y_label)
    );
    for (k, s) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(r, v)| format!("{:.1},{:.1}", x(r), y(v)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
            points.join(" ")
        );
        for &(r, v) in &s.points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                x(r),
                y(v)
            );
        }
        let ly = top + 14.0 + 18.0 * k as f64;
        let lx = left + pw + 14.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            escape(&s.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_a_line_and_a_legend_entry_per_series() {
        let svg = line_chart(
            "EM <per> round",
            "EM (%)",
            &[
                Series {
                    label: "geography (gpt2)".into(),
                    points: vec![(0, 1.0), (1, 4.5), (2, 6.0)],
                    dashed: false,
                },
                Series {
                    label: "LLM".into(),
                    points: vec![(0, 8.0), (2, 9.0)],
                    dashed: true,
                },
            ],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 5);
        assert!(svg.contains("geography (gpt2)"));
        assert!(svg.contains("EM &lt;per&gt; round"));
        assert!(svg.contains("stroke-dasharray"));
    }
}
