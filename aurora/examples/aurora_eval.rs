//! Evaluate a `.aurora` file and print its jobs' JSON (or one job's, or `job inspect`'s view).
//!
//! `cargo run -p hearth-aurora --example aurora_eval -- FILE [KEY] [--bind NAME=VALUE]... [--inspect]`

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut opts = hearth_aurora::EvalOptions::default();
    let mut file = None;
    let mut key = None;
    let mut inspect = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bind" => match args.next().map(|b| hearth_aurora::parse_bind(&b)) {
                Some(Ok(b)) => opts.binds.push(b),
                Some(Err(e)) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
                None => {
                    eprintln!("--bind needs NAME=VALUE");
                    return ExitCode::from(2);
                }
            },
            "--inspect" => inspect = true,
            _ if file.is_none() => file = Some(PathBuf::from(a)),
            _ => key = Some(a),
        }
    }
    let Some(file) = file else {
        eprintln!("usage: aurora_eval FILE [KEY] [--bind NAME=VALUE]... [--inspect]");
        return ExitCode::from(2);
    };
    let evaluated = match hearth_aurora::evaluate(&file, &opts) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match key {
        Some(k) => match evaluated.job_json(&k) {
            Ok(j) if inspect => print!("{}", hearth_aurora::render_inspect(j)),
            Ok(j) => println!("{}", serde_json::to_string_pretty(j).unwrap_or_default()),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => {
            for job in &evaluated.jobs {
                match &job.json {
                    Ok(j) => println!(
                        "{}: {}",
                        job.key,
                        serde_json::to_string(j).unwrap_or_default()
                    ),
                    Err(e) => println!("{}: error: {e}", job.key),
                }
            }
        }
    }
    ExitCode::SUCCESS
}
