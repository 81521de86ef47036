//! What every benchmark section hands back to `main`: markdown for `results.md`, CSV files,
//! plot specifications (rendered to PNG by `plot`), and the aims it measured.
//!
//! Sections never write files themselves; `main` writes everything under `--out`.

use std::path::PathBuf;

/// Options every section gets.
#[derive(Debug, Clone)]
pub(crate) struct RunOpts {
    /// `--quick`: smaller sizes and fewer repetitions (the whole quick run: a few minutes).
    pub quick: bool,
    /// Where results go (`bench/` by default); sections may read earlier files, never write.
    pub out: PathBuf,
    /// `--size-limit SECS`: overrides the time limit of every size run in a child process
    /// (per-packet and control-plane sizes); `None`: each section's own limits.
    pub size_limit: Option<std::time::Duration>,
}

/// One section of `results.md` and its files.
#[derive(Debug, Clone, Default)]
pub(crate) struct Section {
    /// Markdown starting with a `## ` heading: method in a sentence or two, then tables.
    pub markdown: String,
    /// CSV files: (file name such as `veth_pps.csv`, full content with a header line).
    pub csv: Vec<(String, String)>,
    pub plots: Vec<Plot>,
    pub aims: Vec<Aim>,
}

/// One of the aims, reported with what this run measured.
#[derive(Debug, Clone)]
pub(crate) struct Aim {
    /// The aim as the issue words it, e.g. "veth packets/s with Enforcer at 10,000 rules >= 90% of no program".
    pub aim: String,
    /// What was measured, with the numbers the ratio comes from, e.g. "2.71 Mpps / 2.93 Mpps".
    pub measured: String,
    /// The measured ratio (or difference, say so in `measured`), e.g. 0.925.
    pub value: f64,
    /// Whether the aim is met by this run.
    pub met: bool,
}

/// A line or scatter plot, rendered to `<out>/<file>` (PNG) by `plot::render`.
#[derive(Debug, Clone)]
pub(crate) struct Plot {
    /// File name ending in `.png`.
    pub file: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub name: String,
    /// (x, y) points in x order.
    pub points: Vec<(f64, f64)>,
}

/// Prints a section's markdown and writes its CSV files under `opts.out` (`--section` runs;
/// the full run assembles `results.md` itself).
pub(crate) fn emit(opts: &RunOpts, section: &Section) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    println!("{}", section.markdown);
    for (name, content) in &section.csv {
        let path = opts.out.join(name);
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
    }
    crate::plot::render_all(&opts.out, &section.plots)?;
    for aim in &section.aims {
        println!(
            "aim: {} -- measured {} = {:.3} ({})",
            aim.aim,
            aim.measured,
            aim.value,
            if aim.met { "met" } else { "not met" }
        );
    }
    Ok(())
}
