//! `loss.png`: training loss (light blue: every step; dark blue: 20-step moving average) and
//! validation loss (red, with markers) against step, drawn from `metrics.jsonl` with plotters into
//! an RGB buffer and encoded as PNG by the `image` crate. No text (no font is assumed on the
//! machine); the axes span the data, with a light grid.

use super::TrainError;
use plotters::prelude::*;
use std::path::Path;

const W: u32 = 800;
const H: u32 = 480;

fn plot_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Plot(e.to_string())
}

/// Draws the series into an RGB buffer of `W × H`.
fn draw(
    train: &[(f64, f64)],
    avg: &[(f64, f64)],
    val: &[(f64, f64)],
    x: (f64, f64),
    y: (f64, f64),
) -> Result<Vec<u8>, TrainError> {
    let mut buf = vec![255u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(30)
            .build_cartesian_2d(x.0..x.1, y.0..y.1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_labels(5)
            .y_labels(5)
            .x_label_formatter(&|_| String::new())
            .y_label_formatter(&|_| String::new())
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(215, 215, 215))
            .axis_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(
                train.iter().copied(),
                RGBColor(160, 190, 240),
            ))
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(
                avg.iter().copied(),
                RGBColor(20, 60, 200).stroke_width(2),
            ))
            .map_err(plot_err)?;
        let red = RGBColor(210, 30, 30);
        chart
            .draw_series(LineSeries::new(val.iter().copied(), red.stroke_width(3)))
            .map_err(plot_err)?;
        chart
            .draw_series(val.iter().map(|&p| Circle::new(p, 4, red.filled())))
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(buf)
}

/// Draw `metrics.jsonl` of `run_dir` into `run_dir/loss.png`. Returns false when there is
/// nothing to plot.
pub fn plot_run(run_dir: &Path) -> Result<bool, TrainError> {
    let mp = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&mp).map_err(|e| TrainError::io(&mp, e))?;
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for l in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        let Some(step) = v["step"].as_f64() else {
            continue;
        };
        if let Some(x) = v["loss"].as_f64().filter(|x| x.is_finite()) {
            train.push((step, x));
        } else if let Some(x) = v["val_loss"].as_f64().filter(|x| x.is_finite()) {
            val.push((step, x));
        }
    }
    if train.is_empty() {
        return Ok(false);
    }
    let all = train.iter().chain(&val);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let k = 20usize;
    let avg: Vec<(f64, f64)> = (0..train.len())
        .map(|i| {
            let lo = i.saturating_sub(k - 1);
            let s: f64 = train[lo..=i].iter().map(|p| p.1).sum();
            (train[i].0, s / (i - lo + 1) as f64)
        })
        .collect();
    let buf = draw(&train, &avg, &val, (x0, x1), (y0, y1))?;
    let out = run_dir.join("loss.png");
    image::save_buffer_with_format(
        &out,
        &buf,
        W,
        H,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| TrainError::Plot(format!("{}: {e}", out.display())))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_with_the_series_in_their_colours() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = String::new();
        for step in 0..50 {
            lines.push_str(&format!(
                "{{\"step\":{step},\"loss\":{}}}\n",
                5.0 - step as f64 * 0.05
            ));
            if step % 10 == 9 {
                lines.push_str(&format!(
                    "{{\"step\":{step},\"val_loss\":{}}}\n",
                    5.2 - step as f64 * 0.05
                ));
            }
        }
        std::fs::write(dir.path().join("metrics.jsonl"), lines).unwrap();
        assert!(plot_run(dir.path()).unwrap());
        let img = image::open(dir.path().join("loss.png")).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (W, H));
        let count = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
        assert!(count([20, 60, 200]) > 100, "moving average drawn");
        assert!(count([210, 30, 30]) > 50, "validation drawn");
        // Nothing to plot: no file, `false`.
        let empty = tempfile::tempdir().unwrap();
        std::fs::write(empty.path().join("metrics.jsonl"), "").unwrap();
        assert!(!plot_run(empty.path()).unwrap());
    }
}
