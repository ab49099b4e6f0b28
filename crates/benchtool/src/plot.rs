//! `hermod-benchtool plot`: one PNG per benchmark case (messages per second over the run
//! next to the reception → delivery latency CDF) and a JSON summary of the same records,
//! which bench/run uses for its latency columns.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use serde_json::{json, Value};

use crate::series::{self, Delivery};

const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (1400, 520);
const CDF_POINTS: usize = 600;

/// Fonts tried when `--font` is not given: plotters' `ab_glyph` backend draws text from font
/// bytes we hand it (no fontconfig), so a plain TrueType file is all it needs.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
];

#[derive(clap::Args)]
pub struct PlotArgs {
    /// JSON lines as `hermod logs tail --json` prints them; only Delivery records are used.
    #[arg(long)]
    records: PathBuf,
    /// PNG to write; without it only the summary is printed.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value = "")]
    title: String,
    /// Only this envelope sender's mail counts (the load generator's).
    #[arg(long, default_value = "loadgen@loadgen.localhost")]
    sender: String,
    /// Unix time of second 0 on the throughput axis (the start of the load); default: the
    /// first reception.
    #[arg(long)]
    origin_unix: Option<f64>,
    /// `UNIX_TIME:label`: a vertical line on the throughput plot, e.g. the broker's start.
    #[arg(long = "mark")]
    marks: Vec<String>,
    /// TrueType font for the labels (default: DejaVu Sans or Liberation Sans, if installed).
    #[arg(long)]
    font: Option<PathBuf>,
}

/// Read the records, draw if asked, and return the summary. A drawing failure (no font,
/// unwritable path) is reported in the summary instead of failing: the latency numbers are
/// still wanted for the table.
pub fn run(args: &PlotArgs) -> Result<Value> {
    let file =
        File::open(&args.records).with_context(|| format!("open {}", args.records.display()))?;
    let deliveries = series::read_deliveries(BufReader::new(file), &args.sender)?;
    let latencies = series::sorted_latencies_ms(&deliveries);
    let first_created = deliveries.iter().map(|d| d.created).reduce(f64::min);
    let first_event = deliveries.iter().map(|d| d.event).reduce(f64::min);
    let last_event = deliveries.iter().map(|d| d.event).reduce(f64::max);
    let mut summary = json!({
        "deliveries": deliveries.len(),
        "p50_ms": series::percentile(&latencies, 0.5),
        "p99_ms": series::percentile(&latencies, 0.99),
        "max_ms": latencies.last(),
        "first_created_unix": first_created,
        "first_event_unix": first_event,
        "last_event_unix": last_event,
        "plot": Value::Null,
    });
    if let Some(out) = &args.out {
        let origin = args.origin_unix.or(first_created).unwrap_or(0.0);
        let marks = parse_marks(&args.marks)?;
        let drawn = load_font(args.font.as_deref()).and_then(|()| {
            draw(
                out,
                &Chart {
                    title: &args.title,
                    deliveries: &deliveries,
                    latencies: &latencies,
                    origin,
                    marks: &marks,
                },
            )
        });
        match drawn {
            Ok(()) => summary["plot"] = json!(out.display().to_string()),
            Err(e) => summary["plot_error"] = json!(format!("{e:#}")),
        }
    }
    Ok(summary)
}

fn parse_marks(raw: &[String]) -> Result<Vec<(f64, String)>> {
    raw.iter()
        .map(|m| {
            let (t, label) = m.split_once(':').unwrap_or((m.as_str(), ""));
            let t: f64 = t
                .parse()
                .with_context(|| format!("--mark {m:?}: expected UNIX_TIME:label"))?;
            Ok((t, label.to_string()))
        })
        .collect()
}

/// Registers the font once per process. plotters keeps a `&'static` reference to the font
/// bytes, so they are leaked on purpose: one file, once, in a short-lived tool.
fn load_font(explicit: Option<&Path>) -> Result<()> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = LOADED.get_or_init(|| {
        let candidates: Vec<PathBuf> = match explicit {
            Some(p) => vec![p.to_path_buf()],
            None => FONT_CANDIDATES.iter().map(PathBuf::from).collect(),
        };
        for path in &candidates {
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            return register_font(FONT, FontStyle::Normal, bytes)
                .map_err(|_| format!("{} is not a usable TrueType/OpenType font", path.display()));
        }
        Err(format!(
            "no font for the plot labels; tried {candidates:?} (install fonts-dejavu-core or pass --font)"
        ))
    });
    result.clone().map_err(|e| anyhow!(e))
}

struct Chart<'a> {
    title: &'a str,
    deliveries: &'a [Delivery],
    latencies: &'a [f64],
    origin: f64,
    marks: &'a [(f64, String)],
}

fn whole(v: &f64) -> String {
    format!("{v:.0}")
}

/// A step line: each count is drawn flat across the whole second it counts, so a rate never
/// seems to start or end half a second away from where its events were.
fn rate_points(counts: &[u64]) -> Vec<(f64, f64)> {
    counts
        .iter()
        .enumerate()
        .flat_map(|(i, c)| [(i as f64, *c as f64), ((i + 1) as f64, *c as f64)])
        .collect()
}

fn draw(path: &Path, c: &Chart) -> Result<()> {
    let received = series::per_second(c.deliveries.iter().map(|d| d.created), c.origin);
    let delivered = series::per_second(c.deliveries.iter().map(|d| d.event), c.origin);
    let mark_secs = c.marks.iter().map(|(t, _)| t - c.origin);
    let x_max = (received.len().max(delivered.len()) as f64)
        .max(mark_secs.fold(0.0, f64::max) + 1.0)
        .max(1.0);
    let y_max = received
        .iter()
        .chain(&delivered)
        .copied()
        .max()
        .unwrap_or(0) as f64
        * 1.1;
    let y_max = y_max.max(1.0);

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(c.title, (FONT, 24))?;
    let (left, right) = root.split_horizontally(SIZE.0 * 55 / 100);

    let mut rate = ChartBuilder::on(&left)
        .caption(
            "messages per second (from the server's Delivery records)",
            (FONT, 17),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    rate.configure_mesh()
        .x_desc("seconds since the load started")
        .y_desc("msgs/s")
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .label_style((FONT, 14))
        .draw()?;
    rate.draw_series(LineSeries::new(
        rate_points(&received),
        BLUE.stroke_width(2),
    ))?
    .label("received (spooled)")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    rate.draw_series(LineSeries::new(
        rate_points(&delivered),
        RED.stroke_width(2),
    ))?
    .label("delivered (broker acknowledged)")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    for (t, label) in c.marks {
        let x = t - c.origin;
        rate.draw_series(LineSeries::new(
            vec![(x, 0.0), (x, y_max)],
            BLACK.stroke_width(1),
        ))?
        .label(label.clone())
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    rate.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let p = |q| series::percentile(c.latencies, q).unwrap_or(0.0);
    let lat_max = c.latencies.last().copied().unwrap_or(0.0).max(1.0) * 1.02;
    let mut cdf = ChartBuilder::on(&right)
        .caption(
            format!(
                "reception → delivery latency CDF (p50 {:.0} ms, p99 {:.0} ms, n = {})",
                p(0.5),
                p(0.99),
                c.latencies.len()
            ),
            (FONT, 17),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..lat_max, 0.0..100.0)?;
    cdf.configure_mesh()
        .x_desc("ms from reception to the Delivery record (broker acknowledgement)")
        .y_desc("% of messages")
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .label_style((FONT, 14))
        .draw()?;
    cdf.draw_series(LineSeries::new(
        series::cdf_points(c.latencies, CDF_POINTS)
            .into_iter()
            .map(|(ms, f)| (ms, f * 100.0)),
        RGBColor(0, 130, 0).stroke_width(2),
    ))?;
    root.present()?;
    Ok(())
}
