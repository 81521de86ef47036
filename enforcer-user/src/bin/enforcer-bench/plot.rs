//! PNG plots of [`crate::report::Plot`] specifications.

use std::path::Path;

use crate::report::Plot;

/// Renders every plot to `<out>/<file>`.
pub(crate) fn render_all(out: &Path, plots: &[Plot]) -> anyhow::Result<()> {
    // Rendering lands with the plot module; until then plots are listed, not drawn.
    for p in plots {
        eprintln!("plot {} not rendered yet ({})", p.file, out.display());
    }
    Ok(())
}
