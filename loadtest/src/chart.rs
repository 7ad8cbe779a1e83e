//! `chart.svg`: latency percentiles and accepted/recorded over time (or, for `stress`,
//! latency and throughput against the offered rate; for `drain`, progress and rates).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::drain::DrainReport;
use crate::report::{Body, Report};
use crate::scenario::{Mode, StressReport, TokensReport, VotesReport};
use crate::soak::SoakReport;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// The series' legend, framed on a translucent white box.
fn legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()> {
    plot(
        chart
            .configure_series_labels()
            .position(position)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw(),
    )
}

fn plot<T, E: std::fmt::Display>(r: Result<T, E>) -> anyhow::Result<T> {
    r.map_err(|e| anyhow::anyhow!("chart: {e}"))
}

const QUEUE: RGBColor = RGBColor(31, 119, 180);
const DIRECT: RGBColor = RGBColor(214, 39, 40);
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn color(mode: Mode) -> RGBColor {
    match mode {
        Mode::Queue => QUEUE,
        Mode::Direct => DIRECT,
    }
}

pub fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
    plot(root.fill(&WHITE))?;
    let title = format!(
        "loadtest {} — {} × {} (load generator on the same cores)",
        report.scenario, report.machine.nproc, report.machine.cpu_model
    );
    let root = plot(root.titled(&title, ("sans-serif", 20)))?;
    match &report.result {
        Body::Votes(v) => votes(&root, v)?,
        Body::Stress(s) => stress(&root, s)?,
        Body::Drain(d) => drain(&root, d)?,
        Body::Tokens(t) => tokens(&root, t)?,
        Body::Soak(s) => soak(&root, s)?,
    }
    plot(root.present())?;
    Ok(())
}

/// x for a percentile on a "nines" axis: 0 → 0, 90 → 1, 99 → 2, 99.9 → 3, 99.99 → 4.
fn nines(p: f64) -> f64 {
    -(1.0 - (p / 100.0).min(0.9999)).log10()
}

fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.1, 10.0);
    }
    ((lo / 1.5).max(0.01), (hi * 1.5).max(lo * 10.0))
}

/// A named, coloured percentile spectrum (percentile, ms).
type Spectrum<'a> = (String, RGBColor, &'a [(f64, f64)]);

/// Latency (ms, log) by percentile, one line per series.
fn spectrum(area: &Area, caption: &str, series: &[Spectrum]) -> anyhow::Result<()> {
    let (lo, hi) = log_bounds(series.iter().flat_map(|s| s.2.iter().map(|p| p.1)));
    let mut chart = plot(
        ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..4f64, (lo..hi).log_scale().base(2.0)),
    )?;
    plot(
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .y_labels(12)
            .y_label_formatter(&|v| {
                format!("{v:.3}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_owned()
            })
            .x_labels(5)
            .x_label_formatter(&|x| match x.round() as i32 {
                0 => "0".into(),
                1 => "90".into(),
                2 => "99".into(),
                3 => "99.9".into(),
                _ => "99.99".into(),
            })
            .draw(),
    )?;
    for (name, c, points) in series {
        let c = *c;
        plot(chart.draw_series(LineSeries::new(
            points.iter().map(|(p, ms)| (nines(*p), *ms)),
            c.stroke_width(2),
        )))?
        .label(name.clone())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}

/// p50 and p99 per window of scheduled time (ms, log).
fn windows(
    area: &Area,
    caption: &str,
    x_desc: &str,
    runs: &[(String, RGBColor, &[crate::stats::Window])],
) -> anyhow::Result<()> {
    let (lo, hi) = log_bounds(
        runs.iter()
            .flat_map(|r| r.2.iter().flat_map(|w| [w.p50_ms, w.p99_ms])),
    );
    let t_max = runs
        .iter()
        .flat_map(|r| r.2.iter().map(|w| w.start_s))
        .fold(0.0, f64::max)
        .max(0.1)
        * 1.05;
    let mut chart = plot(
        ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..t_max, (lo..hi).log_scale().base(2.0)),
    )?;
    plot(
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("latency (ms)")
            .y_labels(12)
            .y_label_formatter(&|v| {
                format!("{v:.3}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_owned()
            })
            .draw(),
    )?;
    for (name, c, ws) in runs {
        let c = *c;
        plot(chart.draw_series(LineSeries::new(
            ws.iter().map(|w| (w.start_s, w.p99_ms)),
            c.stroke_width(2),
        )))?
        .label(format!("{name} p99"))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        plot(
            chart.draw_series(
                ws.iter()
                    .map(|w| Circle::new((w.start_s, w.p99_ms), 2, c.filled())),
            ),
        )?;
        plot(chart.draw_series(LineSeries::new(
            ws.iter().map(|w| (w.start_s, w.p50_ms)),
            c.mix(0.5).stroke_width(1),
        )))?
        .label(format!("{name} p50"))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.mix(0.5)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

type Series<'a> = (String, RGBColor, u32, &'a [(f64, u64)]);

/// Cumulative counts over time.
fn cumulative(
    area: &Area,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> anyhow::Result<()> {
    let t_max = series
        .iter()
        .flat_map(|s| s.3.iter().map(|p| p.0))
        .fold(0.0, f64::max)
        .max(0.1)
        * 1.05;
    let n_max = series
        .iter()
        .flat_map(|s| s.3.iter().map(|p| p.1))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.05;
    let mut chart = plot(
        ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..t_max, 0f64..n_max),
    )?;
    plot(
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw(),
    )?;
    for (name, c, width, points) in series {
        let (c, width) = (*c, *width);
        // Drawn as steps: a count holds until the next sample says otherwise.
        let mut steps = vec![(0.0, 0.0)];
        for (t, n) in points.iter() {
            let last = steps.last().map_or(0.0, |p| p.1);
            steps.push((*t, last));
            steps.push((*t, *n as f64));
        }
        plot(chart.draw_series(LineSeries::new(steps, c.stroke_width(width))))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(width))
            });
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    Ok(())
}

fn votes(root: &Area, v: &VotesReport) -> anyhow::Result<()> {
    let (top, bottom) = root.split_vertically(430);
    let (left, right) = top.split_horizontally(600);
    let spec: Vec<Spectrum> = v
        .modes
        .iter()
        .map(|r| {
            (
                format!("{} mode", r.mode.name()),
                color(r.mode),
                r.spectrum.as_slice(),
            )
        })
        .collect();
    spectrum(&left, "latency by percentile (from scheduled send)", &spec)?;
    let win: Vec<(String, RGBColor, &[crate::stats::Window])> = v
        .modes
        .iter()
        .map(|r| {
            (
                r.mode.name().to_owned(),
                color(r.mode),
                r.windows.as_slice(),
            )
        })
        .collect();
    let x_desc = match v.modes.first().map(|r| r.windows_by) {
        Some(crate::scenario::WindowsBy::Answer) => "answer time (s): all were due at 0",
        _ => "scheduled send time (s)",
    };
    windows(&right, "latency over the run", x_desc, &win)?;
    let mut series = Vec::new();
    for r in &v.modes {
        let c = color(r.mode);
        let name = r.mode.name();
        series.push((
            format!("{name}: sent (scheduled)"),
            c.mix(0.35).to_rgba_rgb(),
            1,
            r.timeline.sent.as_slice(),
        ));
        series.push((
            format!("{name}: accepted"),
            c.mix(0.7).to_rgba_rgb(),
            2,
            r.timeline.accepted.as_slice(),
        ));
        series.push((
            format!("{name}: recorded"),
            c,
            3,
            r.timeline.recorded.as_slice(),
        ));
    }
    cumulative(
        &bottom,
        "votes sent, accepted and recorded over time",
        "time since the first scheduled send (s)",
        "votes",
        &series,
    )
}

trait Blend {
    fn to_rgba_rgb(&self) -> RGBColor;
}

impl Blend for RGBAColor {
    /// The colour blended on white (SVG lines read better opaque).
    fn to_rgba_rgb(&self) -> RGBColor {
        let (r, g, b) = self.rgb();
        let a = self.alpha();
        let blend = |c: u8| (c as f64 * a + 255.0 * (1.0 - a)).round() as u8;
        RGBColor(blend(r), blend(g), blend(b))
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "a chart is drawn top to bottom: panels, axes, series"
)]
fn stress(root: &Area, s: &StressReport) -> anyhow::Result<()> {
    let (left, right) = root.split_horizontally(600);
    let rates: Vec<f64> = s
        .modes
        .iter()
        .flat_map(|m| m.steps.iter().map(|st| st.rate))
        .collect();
    let (r_lo, r_hi) = log_bounds(rates.iter().copied());
    let (l_lo, l_hi) = log_bounds(
        s.modes
            .iter()
            .flat_map(|m| {
                m.steps
                    .iter()
                    .flat_map(|st| [st.latency.p50_ms, st.latency.p99_ms])
            })
            .chain([s.settings.p99_limit_ms]),
    );
    let mut chart = plot(
        ChartBuilder::on(&left)
            .caption("latency by offered rate", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d((r_lo..r_hi).log_scale(), (l_lo..l_hi).log_scale().base(2.0)),
    )?;
    plot(
        chart
            .configure_mesh()
            .x_desc("offered votes/s")
            .y_desc("latency (ms)")
            .draw(),
    )?;
    plot(chart.draw_series(LineSeries::new(
        [
            (r_lo, s.settings.p99_limit_ms),
            (r_hi, s.settings.p99_limit_ms),
        ],
        BLACK.mix(0.4).stroke_width(1),
    )))?
    .label(format!("p99 limit {} ms", s.settings.p99_limit_ms))
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    for m in &s.modes {
        let c = color(m.mode);
        plot(chart.draw_series(LineSeries::new(
            m.steps.iter().map(|st| (st.rate, st.latency.p99_ms)),
            c.stroke_width(2),
        )))?
        .label(format!("{} p99", m.mode.name()))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        plot(chart.draw_series(LineSeries::new(
            m.steps.iter().map(|st| (st.rate, st.latency.p50_ms)),
            c.mix(0.5).stroke_width(1),
        )))?
        .label(format!("{} p50", m.mode.name()))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.mix(0.5)));
        plot(
            chart.draw_series(
                m.steps
                    .iter()
                    .map(|st| Circle::new((st.rate, st.latency.p99_ms), 3, c.filled())),
            ),
        )?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;

    let (a_lo, a_hi) = log_bounds(
        s.modes
            .iter()
            .flat_map(|m| m.steps.iter().map(|st| st.accepted_per_second.max(0.1)))
            .chain(rates.iter().copied()),
    );
    let mut chart = plot(
        ChartBuilder::on(&right)
            .caption("accepted rate by offered rate", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d((r_lo..r_hi).log_scale(), (a_lo..a_hi).log_scale()),
    )?;
    plot(
        chart
            .configure_mesh()
            .x_desc("offered votes/s")
            .y_desc("accepted votes/s")
            .draw(),
    )?;
    plot(chart.draw_series(LineSeries::new(
        [(r_lo, r_lo), (r_hi, r_hi)],
        BLACK.mix(0.3).stroke_width(1),
    )))?
    .label("accepted = offered")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.3)));
    for m in &s.modes {
        let c = color(m.mode);
        plot(
            chart.draw_series(LineSeries::new(
                m.steps
                    .iter()
                    .map(|st| (st.rate, st.accepted_per_second.max(0.1))),
                c.stroke_width(2),
            )),
        )?
        .label(format!("{} mode", m.mode.name()))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}

#[allow(
    clippy::too_many_lines,
    reason = "a chart is drawn top to bottom: panels, axes, series"
)]
fn drain(root: &Area, d: &DrainReport) -> anyhow::Result<()> {
    let (top, bottom) = root.split_vertically(470);
    let mut series: Vec<Series> = vec![
        (
            "publish".into(),
            PALETTE[7],
            1,
            d.publish.progress.as_slice(),
        ),
        (
            "ack-only consumer".into(),
            PALETTE[1],
            2,
            d.ack_only.progress.as_slice(),
        ),
        (
            "worker end to end".into(),
            PALETTE[0],
            3,
            d.worker_end_to_end.throughput.progress.as_slice(),
        ),
    ];
    for (i, w) in d.batch_writer.iter().enumerate() {
        series.push((
            format!("batch writer {}x{}", w.batch_size, w.writers),
            PALETTE[2 + (i % 2) * 3],
            2,
            w.throughput.progress.as_slice(),
        ));
    }
    cumulative(
        &top,
        "votes over time, each phase from its own start",
        "time since the phase started (s)",
        "votes",
        &series,
    )?;

    // Rates as horizontal bars.
    let mut bars: Vec<(String, f64, RGBColor)> = vec![
        (
            "ack-only consumer".into(),
            d.ack_only.per_second,
            PALETTE[1],
        ),
        (
            "worker end to end".into(),
            d.worker_end_to_end.throughput.per_second,
            PALETTE[0],
        ),
    ];
    for w in &d.batch_writer {
        bars.push((
            format!("batch writer {}x{}", w.batch_size, w.writers),
            w.throughput.per_second,
            PALETTE[2],
        ));
    }
    for c in &d.ceiling_batched {
        bars.push((
            format!("raw SQL {} {}x{}", c.method.name(), c.batch_size, c.writers),
            c.throughput.per_second,
            PALETTE[4],
        ));
    }
    for r in &d.ceiling_single.runs {
        bars.push((
            format!("single-vote, {} ({} conn)", r.variant.name(), r.connections),
            r.per_second,
            PALETTE[3],
        ));
    }
    let max = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.15;
    let n = bars.len();
    let mut chart = plot(
        ChartBuilder::on(&bottom)
            .caption("rates (per second)", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(10)
            .build_cartesian_2d(0f64..max, 0f64..n as f64),
    )?;
    plot(
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_desc("per second")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw(),
    )?;
    for (i, (label, rate, c)) in bars.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        plot(chart.draw_series([Rectangle::new(
            [(0.0, y + 0.15), (*rate, y + 0.85)],
            c.mix(0.6).filled(),
        )]))?;
        plot(chart.draw_series([Text::new(
            format!("{label}: {rate:.0}/s"),
            (max * 0.01, y + 0.62),
            ("sans-serif", 13).into_font(),
        )]))?;
    }
    Ok(())
}

fn tokens(root: &Area, t: &TokensReport) -> anyhow::Result<()> {
    let (top, bottom) = root.split_vertically(430);
    let (left, right) = top.split_horizontally(600);
    spectrum(
        &left,
        "token issuance latency by percentile",
        &[("token requests".into(), PALETTE[4], t.spectrum.as_slice())],
    )?;
    windows(
        &right,
        "token issuance latency over the run",
        "scheduled send time (s)",
        &[("tokens".into(), PALETTE[4], t.windows.as_slice())],
    )?;
    let series: Vec<Series> = vec![
        (
            "requested (scheduled)".into(),
            PALETTE[7],
            1,
            t.timeline.sent.as_slice(),
        ),
        (
            "issued".into(),
            PALETTE[4],
            2,
            t.timeline.accepted.as_slice(),
        ),
    ];
    cumulative(
        &bottom,
        "tokens requested and issued over time",
        "time since the first scheduled request (s)",
        "tokens",
        &series,
    )
}

/// A named, coloured line of (x, y) points.
type Line = (String, RGBColor, Vec<(f64, f64)>);

/// Plain lines on linear axes starting at zero.
fn lines(
    area: &Area,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Line],
) -> anyhow::Result<()> {
    let x_max = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .fold(0.0, f64::max)
        .max(0.1)
        * 1.05;
    let y_max = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let mut chart = plot(
        ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max),
    )?;
    plot(chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw())?;
    for (name, colour, points) in series {
        let colour = *colour;
        plot(chart.draw_series(LineSeries::new(
            points.iter().copied(),
            colour.stroke_width(2),
        )))?
        .label(name.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

fn soak(root: &Area, s: &SoakReport) -> anyhow::Result<()> {
    let (top, bottom) = root.split_vertically(430);
    let names: std::collections::BTreeSet<&String> =
        s.samples.iter().flat_map(|x| x.rss_mib.keys()).collect();
    let memory: Vec<Line> = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            (
                name.clone(),
                PALETTE[i % PALETTE.len()],
                s.samples
                    .iter()
                    .filter_map(|x| Some((x.t_s / 60.0, *x.rss_mib.get(name)?)))
                    .collect(),
            )
        })
        .collect();
    lines(
        &top,
        "resident memory over the run",
        "minutes",
        "MiB",
        &memory,
    )?;
    let (left, right) = bottom.split_horizontally(600);
    let p99: Vec<Line> = [Mode::Queue, Mode::Direct]
        .into_iter()
        .map(|mode| {
            (
                format!("{} burst p99", mode.name()),
                color(mode),
                s.cycles
                    .iter()
                    .filter(|c| c.mode == mode)
                    .map(|c| (c.started_s / 60.0, c.burst.p99_ms))
                    .collect(),
            )
        })
        .collect();
    lines(&left, "burst latency p99 by cycle", "minutes", "ms", &p99)?;
    let db: Vec<Line> = vec![(
        "database size".into(),
        PALETTE[2],
        s.samples
            .iter()
            .filter_map(|x| Some((x.t_s / 60.0, x.db_bytes? as f64 / 1048576.0)))
            .collect(),
    )];
    lines(&right, "database size over the run", "minutes", "MiB", &db)
}
