//! Column-aligned tables, as istioctl prints them: each column as wide as
//! its widest cell plus the padding, the last column unpadded.

pub fn render(padding: usize, header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + padding;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_are_as_wide_as_their_widest_cell_plus_padding() {
        let t = super::render(
            5,
            &["NAMESPACE", "NAME", "PROGRAMMED"],
            &[vec!["default".into(), "waypoint".into(), "True".into()]],
        );
        assert_eq!(
            t,
            "NAMESPACE     NAME         PROGRAMMED\ndefault       waypoint     True\n"
        );
    }
}
