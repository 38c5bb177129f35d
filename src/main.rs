//! The `vessel-sync` binary: parses arguments and hands over to the library.

fn main() {
    std::process::exit(vessel_sync::cli::main());
}
