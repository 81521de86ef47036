//! `enforcer lint`: common policy mistakes.
//!
//! Exit status: 0 no warnings, 1 warnings, 2 files that cannot be loaded. Load errors caused
//! by template placeholders (`{{ .Values.x }}`, `${NS}`) are reported as
//! `template-placeholder` warnings instead; the remaining files are then linted on their own.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::Args;
use enforcer_user::{
    lint::{self, LintReport, Warning},
    sources::LoadError,
};

use super::{EXIT_BAD_INPUT, Files, Format, OutputArg};

#[derive(Debug, Args)]
pub struct LintArgs {
    #[command(flatten)]
    pub files: Files,
    #[command(flatten)]
    pub output: OutputArg,
}

/// Every file a path stands for, as the loader walks it: the file itself, or the YAML/JSON
/// files under a directory (recursively, sorted, skipping hidden names).
fn expand(path: &Path, explicit: bool, out: &mut Vec<PathBuf>, depth: usize) {
    if !path.is_dir() {
        let source = path
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| matches!(x.to_ascii_lowercase().as_str(), "yaml" | "yml" | "json"));
        if explicit || source {
            out.push(path.to_path_buf());
        }
        return;
    }
    // Symlink loops: the loader stops at directories it has seen; a depth limit is enough here.
    if depth > 64 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(path) else {
        out.push(path.to_path_buf());
        return;
    };
    let mut entries: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    entries.sort();
    for e in entries {
        expand(&e, false, out, depth + 1);
    }
}

/// Splits load errors into template-placeholder warnings and genuine errors.
fn classify(errors: Vec<LoadError>) -> (Vec<Warning>, Vec<LoadError>) {
    let mut warnings = Vec::new();
    let mut real = Vec::new();
    for e in errors {
        match lint::warning_for_load_error(&e.origin, &e.field, &e.message) {
            Some(w) => warnings.push(w),
            None => real.push(e),
        }
    }
    (warnings, real)
}

/// Loads and lints; `Err` carries the genuine load errors (and any template warnings).
fn lint_files(files: &[PathBuf]) -> Result<LintReport, (Vec<Warning>, Vec<LoadError>)> {
    let errors = match super::load(files) {
        Ok(inv) => return Ok(lint::lint(&inv)),
        Err(errors) => errors,
    };
    let (template, real) = classify(errors);
    if !real.is_empty() {
        return Err((template, real));
    }
    // Only template placeholders: lint the other files on their own.
    let bad: BTreeSet<PathBuf> = template.iter().map(|w| w.origin.file.clone()).collect();
    let mut all = Vec::new();
    for f in files {
        expand(f, true, &mut all, 0);
    }
    let rest: Vec<PathBuf> = all.into_iter().filter(|f| !bad.contains(f)).collect();
    let mut report = if rest.is_empty() {
        LintReport::default()
    } else {
        match super::load(&rest) {
            Ok(inv) => lint::lint(&inv),
            Err(errors) => {
                let (more, real) = classify(errors);
                let mut template = template;
                template.extend(more);
                return Err((template, real));
            }
        }
    };
    report.notes.push(format!(
        "{} file(s) with template placeholders could not be loaded and were not linted further: {}",
        bad.len(),
        bad.iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    report.warnings.extend(template);
    report.normalize();
    Ok(report)
}

fn print_text(report: &LintReport) {
    for w in &report.warnings {
        print!("{w}");
        println!();
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    match report.warnings.len() {
        0 => println!("no warnings"),
        1 => println!("1 warning"),
        n => println!("{n} warnings"),
    }
}

pub fn run(args: LintArgs) -> anyhow::Result<ExitCode> {
    match lint_files(&args.files.files) {
        Ok(report) => {
            match args.output.output {
                Format::Json => super::print_json(&report)?,
                Format::Text => print_text(&report),
            }
            Ok(if report.warnings.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err((template, real)) => {
            for w in &template {
                eprint!("{w}");
            }
            super::print_errors(&real);
            if args.output.output == Format::Json {
                let errs: Vec<serde_json::Value> = real.iter().map(super::error_json).collect();
                super::print_json(&serde_json::json!({ "warnings": template, "errors": errs }))?;
            }
            eprintln!("fix the errors above before linting (enforcer check -f ... shows them too)");
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
    }
}
