fn main() -> std::process::ExitCode {
    tipoff::cli::main()
}
