//! One problem in an operator's CSV file, as every per-row report names it:
//! `{row, field, value, message}`, rows numbered as a spreadsheet shows them (header = 1); and
//! the one way header names are read.

use serde::{Deserialize, Serialize};

/// One problem in a CSV row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// Row as a spreadsheet numbers it (header = 1).
    pub row: u64,
    /// Column (`(header)` or `(row)` for the whole row).
    pub field: String,
    /// The offending value (at most 200 characters).
    pub value: String,
    /// What is wrong, and what to do.
    pub message: String,
}

/// A [`RowError`], the value cut to 200 characters.
pub fn bad(row: u64, field: &str, value: &str, message: &str) -> RowError {
    RowError {
        row,
        field: field.into(),
        value: value.chars().take(200).collect(),
        message: message.into(),
    }
}

/// A CSV header's column names as every reader here compares them: a UTF-8 byte-order mark on
/// the first one dropped, surrounding spaces trimmed, lower case.
pub fn header_names(header: &csv::ByteRecord) -> Vec<String> {
    header
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let f = if i == 0 {
                f.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(f)
            } else {
                f
            };
            String::from_utf8_lossy(f).trim().to_ascii_lowercase()
        })
        .collect()
}

/// Makes a CSV cell safe for spreadsheets: a cell whose first character is a tab, CR or LF, or
/// whose first non-blank character starts a formula (`=`, `+`, `-`, `@`, or their full-width
/// forms `＝ ＋ － ＠`, which spreadsheets also read as formulas), is escaped with a leading
/// quote so it is shown as text and never run.
pub fn csv_safe(cell: &str) -> String {
    let starts_formula = |c: char| matches!(c, '=' | '+' | '-' | '@' | '＝' | '＋' | '－' | '＠');
    let risky = cell.starts_with(['\t', '\r', '\n'])
        || cell
            .trim_start_matches(|c: char| c.is_whitespace())
            .starts_with(starts_formula);
    if risky {
        format!("'{cell}")
    } else {
        cell.to_string()
    }
}

#[cfg(test)]
mod safe_tests {
    use super::csv_safe;

    #[test]
    fn formulas_are_escaped_however_they_are_dressed() {
        for risky in [
            "=1+1", "+1", "-1", "@SUM(A1)", " =1+1", "\n=1+1", "\t1", "＝1+1", " ＠x", "\r",
        ] {
            assert!(csv_safe(risky).starts_with('\''), "{risky:?}");
        }
        for plain in ["SEAF-031", "a=b", "", "complete", "12.5"] {
            assert_eq!(csv_safe(plain), plain);
        }
    }
}
