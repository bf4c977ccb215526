//! Charts as inline SVG, drawn here rather than by a plotting crate: two chart kinds, a few dozen
//! lines each, no fonts or scripts (docs/dashboard.md §3).

use std::fmt::Write;

use super::html::esc;

const W: f64 = 640.0;
const H: f64 = 320.0;
/// Left margin (axis labels).
const ML: f64 = 48.0;
/// Right margin (legend).
const MR: f64 = 150.0;
/// Top margin.
const MT: f64 = 12.0;
/// Bottom margin (x labels).
const MB: f64 = 36.0;

/// A categorical colour for series `i`.
pub fn colour(i: usize) -> &'static str {
    const PALETTE: [&str; 8] = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    ];
    PALETTE[i % PALETTE.len()]
}

/// Chart coordinates of (x, y) for x in `x_range` and y in 0…`y_max`.
fn at(x: f64, y: f64, x_range: (f64, f64), y_max: f64) -> (f64, f64) {
    let span = (x_range.1 - x_range.0).max(1e-9);
    let px = ML + (x - x_range.0) / span * (W - ML - MR);
    let py = H - MB - y / y_max.max(1e-9) * (H - MT - MB);
    (px, py)
}

/// Axes with `ticks` labelled y gridlines (0…y_max) and the x-axis labels given.
fn axes(
    out: &mut String,
    y_max: f64,
    y_format: &dyn Fn(f64) -> String,
    x_labels: &[(f64, String)],
    x_range: (f64, f64),
) {
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        let (_, py) = at(x_range.0, y, x_range, y_max);
        let _ = write!(
            out,
            "<line x1=\"{ML}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            W - MR,
            ML - 4.0,
            py + 3.0,
            y_format(y)
        );
    }
    for (x, label) in x_labels {
        let (px, _) = at(*x, 0.0, x_range, y_max);
        let _ = write!(
            out,
            "<text x=\"{px:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            H - MB + 14.0,
            esc(label)
        );
    }
}

/// One line series: a name and its points (x, y).
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points in x order.
    pub points: Vec<(f64, f64)>,
}

/// A line chart of `series` with y from 0 to `y_max` and the given x-axis labels.
pub fn lines(
    id: &str,
    series: &[Series],
    y_max: f64,
    y_format: &dyn Fn(f64) -> String,
    x_labels: &[(f64, String)],
) -> String {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let x_range = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let x_range = if x_range.0.is_finite() {
        x_range
    } else {
        (0.0, 1.0)
    };
    let mut out = format!(
        "<svg id=\"{id}\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">"
    );
    axes(&mut out, y_max, y_format, x_labels, x_range);
    for (i, s) in series.iter().enumerate() {
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| {
                let (px, py) = at(x, y, x_range, y_max);
                format!("{px:.1},{py:.1}")
            })
            .collect();
        let c = colour(i);
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for p in &path {
            let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                out,
                "<circle cx=\"{px}\" cy=\"{py}\" r=\"2.5\" fill=\"{c}\"/>"
            );
        }
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{c}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" class=\"legend\">{}</text>",
            W - MR + 10.0,
            MT + 16.0 * i as f64,
            W - MR + 24.0,
            MT + 9.0 + 16.0 * i as f64,
            esc(&s.name)
        );
    }
    out.push_str("</svg>");
    out
}

/// One scatter point.
pub struct Point {
    /// Label shown beside it (the uid).
    pub label: String,
    /// x in 0…1.
    pub x: f64,
    /// y in 0…1.
    pub y: f64,
    /// Drawn as a filled diamond (e.g. on the stored full frontier) instead of a circle.
    pub marked: bool,
    /// On the 2-D frontier drawn as a line.
    pub on_frontier: bool,
}

/// A 0…1 × 0…1 scatter with the frontier points joined by a staircase line.
pub fn scatter(id: &str, points: &[Point], x_name: &str, y_name: &str) -> String {
    let range = (0.0, 1.0);
    let pct = |v: f64| format!("{:.0}%", v * 100.0);
    let labels: Vec<(f64, String)> = (0..=4)
        .map(|i| (f64::from(i) / 4.0, pct(f64::from(i) / 4.0)))
        .collect();
    let mut out = format!(
        "<svg id=\"{id}\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">"
    );
    axes(&mut out, 1.0, &pct, &labels, range);
    let mut front: Vec<&Point> = points.iter().filter(|p| p.on_frontier).collect();
    front.sort_by(|a, b| a.x.total_cmp(&b.x));
    // The staircase: from each frontier point right, then down to the next one.
    let mut steps = Vec::new();
    for (i, p) in front.iter().enumerate() {
        steps.push(at(p.x, p.y, range, 1.0));
        if let Some(next) = front.get(i + 1) {
            steps.push(at(next.x, p.y, range, 1.0));
        }
    }
    if !steps.is_empty() {
        let pts: Vec<String> = steps
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = write!(
            out,
            "<polyline id=\"{id}-frontier\" fill=\"none\" stroke=\"#d62728\" stroke-dasharray=\"4 3\" points=\"{}\"/>",
            pts.join(" ")
        );
    }
    for p in points {
        let (px, py) = at(p.x, p.y, range, 1.0);
        let colour = if p.on_frontier { "#d62728" } else { "#1f77b4" };
        if p.marked {
            let _ = write!(
                out,
                "<path class=\"marked\" d=\"M{px:.1} {:.1}L{:.1} {py:.1}L{px:.1} {:.1}L{:.1} {py:.1}Z\" fill=\"{colour}\"/>",
                py - 5.0,
                px + 5.0,
                py + 5.0,
                px - 5.0
            );
        } else {
            let _ = write!(
                out,
                "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"{colour}\"/>"
            );
        }
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
            px + 6.0,
            py - 4.0,
            esc(&p.label)
        );
    }
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\
         <text x=\"12\" y=\"{:.1}\" font-size=\"11\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{}</text></svg>",
        (ML + W - MR) / 2.0,
        H - 6.0,
        esc(x_name),
        H / 2.0,
        H / 2.0,
        esc(y_name)
    );
    out
}
