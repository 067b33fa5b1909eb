fn main() -> std::process::ExitCode {
    latmap::cli::main()
}
