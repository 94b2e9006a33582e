//! Per-step metrics (`metrics.jsonl`, one JSON object per line) and the PNG plots of a run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::TrainError;

/// One line of `metrics.jsonl`. Step 0 (`phase = "init"`) holds the starting policy's held-out
/// success and the random valid policy's; step k ≥ 1 the statistics of iteration k (and the
/// held-out success after its update when evaluated). Absent fields were not measured.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StepRecord {
    pub step: u64,
    /// `init`, `imitation` or `rl`.
    pub phase: String,
    /// Fraction of this iteration's training episodes solved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_success: Option<f64>,
    /// Held-out success, sampling at the training temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heldout_success: Option<f64>,
    /// Held-out success, greedy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heldout_greedy: Option<f64>,
    /// Held-out success of the uniformly random valid policy (step 0 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_valid_heldout: Option<f64>,
    /// Mean token entropy of the sampled responses (every response token, forced ones too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entropy: Option<f64>,
    /// Mean token entropy over tokens that had at least two valid choices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entropy_free: Option<f64>,
    /// Mean response surprisal `Σ −logp` at sampling time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surprisal: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_turns: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha_min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha_max: Option<f64>,
    /// Fraction of groups where AEM's guard kept α = 1 (range of mean entropy below δ).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard_frac: Option<f64>,
    /// Fraction of responses with `A·(α−1) > 0` (AEM sharpens) and `< 0` (AEM explores).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frac_pos: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frac_neg: Option<f64>,
    /// Fraction of responses the PPO step trained on (only under `algo.aem_only`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trained_frac: Option<f64>,
    /// Fraction of responses with a non-zero base advantage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adv_nonzero: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_frac: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approx_kl: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Token positions through forward + backward per second of update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_s: Option<f64>,
    /// Wall time since the run started (continued across resumes).
    pub wall_s: f64,
}

/// The timing fields (everything else is a function of the config and the seed).
pub const TIMING_FIELDS: [&str; 5] = ["tokens_per_s", "sample_s", "update_s", "eval_s", "wall_s"];

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> TrainError + 'a {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// Reads `metrics.jsonl` (an absent file is empty; a torn last line from a crash is dropped).
pub fn read_jsonl(path: &Path) -> Result<Vec<StepRecord>, TrainError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path, "read metrics")(e)),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        match serde_json::from_str::<StepRecord>(l) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() => break,
            Err(e) => {
                return Err(TrainError::RunDir {
                    path: path.to_path_buf(),
                    why: format!("metrics line {}: {e}", i + 1),
                })
            }
        }
    }
    Ok(out)
}

/// The records of a run being resumed whose checkpoint is at `step` (`None`: no checkpoint, the
/// run starts again from its config): the lines of steps `0..=step`, which must all be present,
/// in order. Later lines (the trainer appends a record before it writes that iteration's
/// checkpoint, so they belong to iterations the resumed run recomputes identically) and a torn
/// last line (a crash inside the append) are cut; the kept lines stay byte for byte as written,
/// so a resumed run's file equals an uninterrupted one's. The file is rewritten atomically only
/// when something was cut.
pub fn resume_records(path: &Path, step: Option<u64>) -> Result<Vec<StepRecord>, TrainError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(path, "read metrics")(e)),
    };
    let bad = |why: String| TrainError::RunDir {
        path: path.to_path_buf(),
        why,
    };
    let mut out = Vec::new();
    let mut keep = 0usize; // bytes of the kept lines
    let mut pos = 0usize;
    let mut line_no = 0usize;
    while pos < bytes.len() {
        let end = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i + 1);
        line_no += 1;
        let Some(end) = end else {
            break; // no newline: a torn last line
        };
        let parsed = std::str::from_utf8(&bytes[pos..end - 1])
            .ok()
            .and_then(|l| serde_json::from_str::<StepRecord>(l).ok());
        let Some(rec) = parsed else {
            if end == bytes.len() {
                break; // a torn last line that happens to end in a newline
            }
            return Err(bad(format!("metrics line {line_no} is not a record")));
        };
        if step.is_none_or(|s| rec.step > s) {
            break;
        }
        if rec.step != out.len() as u64 {
            return Err(bad(format!(
                "metrics line {line_no} holds step {}, expected step {}",
                rec.step,
                out.len()
            )));
        }
        out.push(rec);
        pos = end;
        keep = end;
    }
    if let Some(s) = step {
        if out.len() as u64 != s + 1 {
            return Err(bad(format!(
                "the checkpoint is at iteration {s} but metrics.jsonl has records only up to step {}",
                out.len() as i64 - 1
            )));
        }
    }
    if keep != bytes.len() {
        write_atomic(path, &bytes[..keep])?;
    }
    Ok(out)
}

/// One response of an iteration, as a line of `responses.tsv` (`run.responses_every`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResponseRow {
    /// The RL iteration.
    pub step: u64,
    /// Task (group) index within the iteration, episode index, turn index within the episode.
    pub task: usize,
    pub episode: usize,
    pub turn: usize,
    /// Tokens, and tokens with ≥ 2 valid choices.
    pub len: usize,
    pub free: usize,
    /// Mean token entropy (all tokens), mean over free tokens (0 without one), surprisal Σ −logp.
    pub entropy: f64,
    pub entropy_free: f64,
    pub surprisal: f64,
    /// Base advantage and AEM's α (1 when AEM is off).
    pub adv_base: f64,
    pub alpha: f64,
}

/// The header line of `responses.tsv`.
pub const RESPONSES_HEADER: &str =
    "step\ttask\tepisode\tturn\tlen\tfree\tentropy\tentropy_free\tsurprisal\tadv_base\talpha";

impl ResponseRow {
    fn tsv(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{:.6}\t{:.6}\t{:.6}\t{:.6}\t{:.6}",
            self.step,
            self.task,
            self.episode,
            self.turn,
            self.len,
            self.free,
            self.entropy,
            self.entropy_free,
            self.surprisal,
            self.adv_base,
            self.alpha
        )
    }
}

/// Appends one iteration's rows to `responses.tsv` (the header first if the file is new) and
/// syncs them, before the iteration's metrics record.
pub fn append_responses(path: &Path, rows: &[ResponseRow]) -> Result<(), TrainError> {
    let mut text = String::new();
    if !path.exists() {
        text.push_str(RESPONSES_HEADER);
        text.push('\n');
    }
    for r in rows {
        text.push_str(&r.tsv());
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path, "open responses"))?;
    f.write_all(text.as_bytes())
        .map_err(io(path, "write responses"))?;
    f.sync_data().map_err(io(path, "write responses"))
}

/// Cuts `responses.tsv` of a run resumed at checkpoint `step` (`None`: started again) to the
/// rows of iterations `..=step`, as [`resume_records`] does for the metrics (a torn last line
/// goes too); an absent file stays absent.
pub fn resume_responses(path: &Path, step: Option<u64>) -> Result<(), TrainError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path, "read responses")(e)),
    };
    let mut keep = 0usize;
    let mut pos = 0usize;
    while let Some(i) = bytes[pos..].iter().position(|&b| b == b'\n') {
        let line = &bytes[pos..pos + i];
        let first = line.split(|&b| b == b'\t').next().unwrap_or(&[]);
        let row_step = std::str::from_utf8(first)
            .ok()
            .and_then(|f| f.parse::<u64>().ok());
        let is_header = pos == 0 && line == RESPONSES_HEADER.as_bytes();
        let keep_line = is_header || matches!((row_step, step), (Some(r), Some(s)) if r <= s);
        if !keep_line {
            break;
        }
        pos += i + 1;
        keep = pos;
    }
    if keep != bytes.len() {
        write_atomic(path, &bytes[..keep])?;
    }
    Ok(())
}

/// Appends one record as a line and syncs it to disk (the record is durable before the
/// iteration's checkpoint is written).
pub fn append_jsonl(path: &Path, r: &StepRecord) -> Result<(), TrainError> {
    let line = serde_json::to_string(r)
        .map_err(|e| TrainError::Config(format!("serialise metrics: {e}")))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path, "open metrics"))?;
    writeln!(f, "{line}").map_err(io(path, "write metrics"))?;
    f.sync_data().map_err(io(path, "write metrics"))
}

/// Writes a file atomically ([`crate::io::write_atomic`]: temporary file, fsync, rename; a
/// non-regular file at `path` is refused).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    crate::io::write_atomic(path, bytes).map_err(TrainError::from)
}

/// Registers a system sans-serif font for plot text, once; `false` if none was found (the
/// plots are then drawn without text). `AEM_FONT` names a TTF file to use instead.
fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("AEM_FONT") {
            candidates.push(PathBuf::from(p));
        }
        for p in [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
            "/Library/Fonts/Arial.ttf",
            "C:\\Windows\\Fonts\\arial.ttf",
        ] {
            candidates.push(PathBuf::from(p));
        }
        for c in candidates {
            if let Ok(bytes) = std::fs::read(&c) {
                let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, leaked).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// One curve: a name, a colour and its points.
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

/// A line chart of `series` against `x_label`, written to `path` (PNG, 900×540).
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    y_range: Option<(f64, f64)>,
    series: &[Series],
) -> Result<(), TrainError> {
    let err = |e: String| TrainError::Plot {
        path: path.to_path_buf(),
        why: e,
    };
    let text = font_available();
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let x_max = xs.fold(1.0f64, f64::max);
    let (y_lo, y_hi) = y_range.unwrap_or_else(|| {
        let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
            (a.min(y), b.max(y))
        });
        if lo.is_finite() && hi > lo {
            (lo.min(0.0), hi * 1.05)
        } else {
            (0.0, 1.0)
        }
    });
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(16);
    if text {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(56);
    } else {
        builder.x_label_area_size(8).y_label_area_size(8);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..x_max, y_lo..y_hi)
        .map_err(|e| err(e.to_string()))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 14));
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(|e| err(e.to_string()))?;
    for s in series {
        let color = s.color;
        let drawn = chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?;
        if text {
            drawn.label(s.name.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        }
    }
    if text && series.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))
}

/// Points `(step, f(record))` for records where `f` gives a value.
pub fn points(recs: &[StepRecord], f: impl Fn(&StepRecord) -> Option<f64>) -> Vec<(f64, f64)> {
    recs.iter()
        .filter_map(|r| f(r).map(|y| (r.step as f64, y)))
        .collect()
}

/// A trailing moving average over `w` points.
pub fn smooth(pts: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    let w = w.max(1);
    (0..pts.len())
        .map(|i| {
            let lo = i.saturating_sub(w - 1);
            let win = &pts[lo..=i];
            (
                pts[i].0,
                win.iter().map(|p| p.1).sum::<f64>() / win.len() as f64,
            )
        })
        .collect()
}

/// Writes `success.png`, `entropy.png` and `aem.png` of a run into `dir`.
pub fn plot_run(dir: &Path, recs: &[StepRecord]) -> Result<(), TrainError> {
    let random = recs.iter().find_map(|r| r.random_valid_heldout);
    let last = recs.last().map_or(1.0, |r| r.step as f64);
    let mut success = vec![
        Series {
            name: "train (sampled, 10-step mean)".into(),
            color: RGBColor(150, 150, 220),
            points: smooth(&points(recs, |r| r.train_success), 10),
        },
        Series {
            name: "held-out, sampled".into(),
            color: RGBColor(30, 80, 200),
            points: points(recs, |r| r.heldout_success),
        },
        Series {
            name: "held-out, greedy".into(),
            color: RGBColor(220, 60, 40),
            points: points(recs, |r| r.heldout_greedy),
        },
    ];
    if let Some(r) = random {
        success.push(Series {
            name: "random valid policy (held-out)".into(),
            color: RGBColor(90, 90, 90),
            points: vec![(0.0, r), (last, r)],
        });
    }
    line_chart(
        &dir.join("success.png"),
        "Success rate",
        "iteration",
        "success",
        Some((0.0, 1.0)),
        &success,
    )?;
    line_chart(
        &dir.join("entropy.png"),
        "Mean token entropy of sampled responses (nats)",
        "iteration",
        "entropy",
        None,
        &[
            Series {
                name: "all response tokens".into(),
                color: RGBColor(30, 80, 200),
                points: points(recs, |r| r.entropy),
            },
            Series {
                name: "tokens with >= 2 valid choices".into(),
                color: RGBColor(220, 60, 40),
                points: points(recs, |r| r.entropy_free),
            },
        ],
    )?;
    line_chart(
        &dir.join("aem.png"),
        "AEM: alpha range and guard fraction",
        "iteration",
        "value",
        None,
        &[
            Series {
                name: "alpha max".into(),
                color: RGBColor(220, 60, 40),
                points: points(recs, |r| r.alpha_max),
            },
            Series {
                name: "alpha min".into(),
                color: RGBColor(30, 80, 200),
                points: points(recs, |r| r.alpha_min),
            },
            Series {
                name: "guard fraction".into(),
                color: RGBColor(90, 90, 90),
                points: points(recs, |r| r.guard_frac),
            },
        ],
    )
}
