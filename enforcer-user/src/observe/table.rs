//! Plain column tables for `enforcer get -o table` (kubectl style: upper-case headers, columns
//! separated by three spaces, left-aligned, no borders).

/// A table being built.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: ToString>(headers: impl IntoIterator<Item = S>) -> Table {
        Table {
            headers: headers.into_iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<S: ToString>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows
            .push(cells.into_iter().map(|c| c.to_string()).collect());
    }

    /// The rendered table, one line per row, each ending in a newline. Trailing spaces are
    /// trimmed; a cell's width counts characters, not bytes.
    pub fn render(&self) -> String {
        let n = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; n];
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                line.push_str(c);
                if i + 1 < r.len() {
                    let pad = widths[i] - c.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let mut t = Table::new(["NAME", "ENTRIES", "FILL"]);
        t.row(["conntrack", "12", "0.0%"]);
        t.row(["peer_v4", "1048576", ""]);
        assert_eq!(
            t.render(),
            "NAME        ENTRIES   FILL\n\
             conntrack   12        0.0%\n\
             peer_v4     1048576\n"
        );
    }

    #[test]
    fn widths_count_characters() {
        let mut t = Table::new(["A", "B"]);
        t.row(["→x", "y"]);
        assert_eq!(t.render(), "A    B\n→x   y\n");
    }
}
