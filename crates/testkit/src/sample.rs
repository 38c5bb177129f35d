//! A generated seafarer CSV for `bench users`, the demo and the tests: BOM, CRLF line ends, a
//! quoted comma in every 7th last name, and (optionally) one bad row in a hundred, cycling
//! through the mistakes seen in real exports. Returns the (row, field) pairs validation must
//! report, in row order.

use std::io::{BufWriter, Write};
use std::path::Path;

/// Writes `rows` data rows to `path`; with `bad`, every hundredth row (the 51st of each hundred)
/// carries a mistake. Every tenth row asks for SAFETY-101, every twentieth also for ERM-110.
pub fn write(path: &Path, rows: u64, bad: bool) -> std::io::Result<Vec<(u64, &'static str)>> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    out.write_all(
        b"\xEF\xBB\xBFusername,firstname,lastname,email,idnumber,password,course1,course2\r\n",
    )?;
    let mut expect = Vec::new();
    for i in 0..rows {
        let row = i + 2;
        let mut username = format!("s{i:06}");
        let mut first = format!("Sea{i}").into_bytes();
        let mut last = if i % 7 == 0 {
            b"\"Farer, Jr\"".to_vec()
        } else {
            b"Farer".to_vec()
        };
        let mut email = format!("s{i:06}@fleet.example.invalid");
        let mut idnumber = format!("SEAF-{i:07}");
        if bad && i % 100 == 50 {
            match (i / 100) % 8 {
                0 => {
                    first.clear();
                    expect.push((row, "firstname"));
                }
                1 => {
                    email = format!("s{i:06}.fleet.example.invalid");
                    expect.push((row, "email"));
                }
                2 => {
                    username = format!("s{:06}", i - 1);
                    expect.push((row - 1, "username"));
                    expect.push((row, "username"));
                }
                3 => {
                    idnumber = format!("SEAF-{:07}", i - 1);
                    expect.push((row - 1, "idnumber"));
                    expect.push((row, "idnumber"));
                }
                4 => {
                    last = b"Fa\xe9rer".to_vec();
                    expect.push((row, "lastname"));
                }
                5 => {
                    first = b"\"Sea\r\nFarer\"".to_vec();
                    expect.push((row, "firstname"));
                }
                6 => {
                    last = br#""=HYPERLINK(""http://x.invalid"")""#.to_vec();
                    expect.push((row, "lastname"));
                }
                _ => {
                    email = format!("S{:06}@FLEET.example.invalid", i - 1);
                    expect.push((row - 1, "email"));
                    expect.push((row, "email"));
                }
            }
        }
        let courses = match i % 20 {
            0 => "SAFETY-101,ERM-110",
            10 => "SAFETY-101,",
            _ => ",",
        };
        out.write_all(username.as_bytes())?;
        out.write_all(b",")?;
        out.write_all(&first)?;
        out.write_all(b",")?;
        out.write_all(&last)?;
        write!(out, ",{email},{idnumber},Sailor#2026,{courses}\r\n")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(expect)
}
