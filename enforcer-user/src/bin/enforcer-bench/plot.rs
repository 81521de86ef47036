//! PNG plots of [`crate::report::Plot`] specifications, drawn with `plotters` (bitmap backend).
//!
//! Text goes through plotters' `ab_glyph` rasterizer with DejaVu Sans read at run time (Debian
//! package `fonts-dejavu-core`, installed by `cargo xtask setup`), so no system font library
//! is linked. Series are lines with point markers; a two-point horizontal series (a floor or a
//! reference level) is drawn dashed without markers. Points with a non-finite coordinate (or
//! a non-positive one on a log axis: a size that did not finish) are left out.

use std::{path::Path, sync::OnceLock};

use anyhow::{Context as _, Result, anyhow, bail};
use plotters::{
    coord::{ranged1d::ValueFormatter, types::RangedCoordf64},
    prelude::*,
};

use crate::report::Plot;

/// The font every label is drawn with.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// Picture size in pixels.
const SIZE: (u32, u32) = (1100, 680);

/// Distinct, print-friendly colours (Tableau 10), cycled by series index.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Renders every plot to `<out>/<file>`.
pub(crate) fn render_all(out: &Path, plots: &[Plot]) -> Result<()> {
    if plots.is_empty() {
        return Ok(());
    }
    register_font()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for p in plots {
        let path = out.join(&p.file);
        render(&path, p).with_context(|| format!("plotting {}", path.display()))?;
    }
    Ok(())
}

/// Reads DejaVu Sans once and registers it as plotters' `sans-serif` family.
fn register_font() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = std::fs::read(FONT).map_err(|e| {
            format!(
                "reading the plot font {FONT}: {e} (install the Debian package \
                 fonts-dejavu-core, e.g. with `cargo xtask setup`)"
            )
        })?;
        // plotters keeps fonts for the life of the process; the font is read once.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{FONT} is not a font plotters can read"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Axis bounds over every drawable point.
fn bounds(values: impl Iterator<Item = f64>, log: bool) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && (!log || *v > 0.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return None;
    }
    Some(if log {
        (lo / 1.6, hi * 1.6)
    } else if lo >= 0.0 {
        // Linear axes of costs and sizes start at zero so ratios can be read off.
        (0.0, if hi > 0.0 { hi * 1.12 } else { 1.0 })
    } else {
        let pad = ((hi - lo) * 0.08).max(1e-9);
        (lo - pad, hi + pad)
    })
}

fn render(path: &Path, p: &Plot) -> Result<()> {
    let drawable = |x: f64, y: f64| {
        x.is_finite() && y.is_finite() && (!p.log_x || x > 0.0) && (!p.log_y || y > 0.0)
    };
    let points = || {
        p.series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|&(x, y)| drawable(x, y))
    };
    let (Some((x0, x1)), Some((y0, y1))) = (
        bounds(points().map(|(x, _)| x), p.log_x),
        bounds(points().map(|(_, y)| y), p.log_y),
    ) else {
        bail!("no finite points to plot in {:?}", p.title);
    };
    let area = BitMapBackend::new(path, SIZE).into_drawing_area();
    area.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    match (p.log_x, p.log_y) {
        (true, true) => draw(
            &area,
            p,
            (x0..x1).log_scale(),
            (y0..y1).log_scale(),
            drawable,
        )?,
        (true, false) => draw(&area, p, (x0..x1).log_scale(), y0..y1, drawable)?,
        (false, true) => draw(&area, p, x0..x1, (y0..y1).log_scale(), drawable)?,
        (false, false) => {
            let (x, y): (RangedCoordf64, RangedCoordf64) = ((x0..x1).into(), (y0..y1).into());
            draw(&area, p, x, y, drawable)?
        }
    }
    area.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Short tick labels: 1k, 10k, 1M for large values, no trailing zeros for small ones.
fn tick(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.1}", v / 1e6)))
    } else if a >= 1e4 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

fn draw<X, Y, XC, YC>(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    p: &Plot,
    x: X,
    y: Y,
    drawable: impl Fn(f64, f64) -> bool,
) -> Result<()>
where
    X: plotters::coord::ranged1d::AsRangedCoord<Value = f64, CoordDescType = XC>,
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64, CoordDescType = YC>,
    XC: Ranged<ValueType = f64> + ValueFormatter<f64>,
    YC: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let err = |e: &dyn std::fmt::Display| anyhow!("{e}");
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 26))
        .margin(18)
        .x_label_area_size(56)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(&p.x_label)
        .y_desc(&p.y_label)
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 16))
        .x_labels(12)
        .y_labels(10)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in p.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|&(x, y)| drawable(x, y))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let level = pts.len() == 2 && pts[0].1 == pts[1].1;
        let style = colour.stroke_width(2);
        if level {
            chart
                .draw_series(DashedLineSeries::new(pts, 10, 6, style))
                .map_err(|e| err(&e))?
                .label(&s.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2))
                });
        } else {
            chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(|e| err(&e))?
                .label(&s.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(
                    pts.into_iter()
                        .map(|xy| Circle::new(xy, 4, colour.filled())),
                )
                .map_err(|e| err(&e))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::tick;

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(1_000_000.0), "1M");
        assert_eq!(tick(100_000.0), "100k");
        assert_eq!(tick(1_000.0), "1000");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(0.0), "0");
    }
}
