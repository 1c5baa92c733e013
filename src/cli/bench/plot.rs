//! The recall-against-latency chart of an ef sweep (p99, with p50 for
//! scale), as SVG (plotters). Latency is on a log axis (an ef sweep spans
//! an order of magnitude); every p99 point is labelled with its ef and QPS.

use std::path::Path;

use anyhow::{bail, Result};
use plotters::prelude::*;

use super::report::Report;

/// Refuse, before any load, a chart path this build cannot write.
pub fn check_path(path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if ext != "svg" {
        bail!(
            "--plot {}: only .svg charts are supported (convert to PNG with any SVG tool)",
            path.display()
        );
    }
    Ok(())
}

/// The label of one point: its ef (the index default's value for ef 0)
/// and its throughput.
pub fn point_label(ef: u32, default_ef: u32, qps: f64) -> String {
    let ef = if ef == 0 {
        format!("ef {default_ef} (default)")
    } else {
        format!("ef {ef}")
    };
    format!("{ef}, {qps:.0} QPS")
}

/// One point per report with both a recall and a p99, labelled with its ef
/// and QPS and joined in ef order (up and to the left is better); the p50
/// of the same runs is drawn lighter for scale.
pub fn recall_vs_p99(path: &Path, reports: &[Report]) -> Result<()> {
    // (ef, p50, p99, recall, label)
    let mut points: Vec<(u32, f64, f64, f64, String)> = reports
        .iter()
        .filter_map(|r| {
            Some((
                r.ef,
                r.p50_us?.max(1.0),
                r.p99_us?.max(1.0),
                r.recall?,
                point_label(r.ef, r.default_ef, r.qps),
            ))
        })
        .collect();
    if points.is_empty() {
        bail!("no measurement has both a recall and a p99 to plot");
    }
    points.sort_by_key(|p| p.0);
    let first = &reports[0];
    // Log axis from a little under the fastest p50 to well past the slowest
    // p99 (room for the labels).
    let min_x = points.iter().map(|p| p.1).fold(f64::MAX, f64::min) / 1.3;
    let max_x = points.iter().map(|p| p.2).fold(0.0, f64::max) * 2.0;
    let min_y = points.iter().map(|p| p.3).fold(1.0, f64::min);
    let y_lo = (min_y - 0.05).clamp(0.0, 0.95);
    let mode = match first.rate {
        None => format!("closed loop, {} callers", first.concurrency),
        Some(rate) => format!("open loop, {rate:.0} calls/s"),
    };
    let title = format!(
        "fathom bench: recall@{} vs latency, index {} ({mode})",
        first.k, first.index
    );

    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((min_x..max_x.max(min_x * 10.0)).log_scale(), y_lo..1.0)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("latency per call (µs, log scale)")
        .y_desc(format!("recall@{}", first.k))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(draw_err)?;
    let p99 = RGBColor(31, 119, 180);
    let p50 = RGBColor(160, 160, 160);
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.1, p.3)),
            p50.stroke_width(1),
        ))
        .map_err(draw_err)?
        .label("p50")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], p50.stroke_width(2)));
    chart
        .draw_series(
            points
                .iter()
                .map(|p| Circle::new((p.1, p.3), 3, p50.filled())),
        )
        .map_err(draw_err)?;
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.2, p.3)),
            p99.stroke_width(2),
        ))
        .map_err(draw_err)?
        .label("p99")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], p99.stroke_width(2)));
    chart
        .draw_series(points.iter().map(|p| {
            EmptyElement::at((p.2, p.3))
                + Circle::new((0, 0), 5, p99.filled())
                + Text::new(p.4.clone(), (8, -18), ("sans-serif", 13))
        }))
        .map_err(draw_err)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

fn draw_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}
