use clap::Args as ClapArgs;

#[derive(ClapArgs)]
pub struct Args {
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Only cases whose op or shape contains this text.
    #[arg(long)]
    filter: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.device.as_str() {
        "cpu" => {
            let results = voxseg::bench::cpu_suite(a.filter.as_deref())?;
            if a.json {
                print!("{}", voxseg::bench::json_lines(&results)?);
            } else {
                voxseg::bench::print_table(&results);
            }
            Ok(())
        }
        "cuda" => anyhow::bail!("the CUDA benchmark suite is not in this build yet"),
        other => anyhow::bail!("invalid --device: '{other}': expected cpu or cuda"),
    }
}
