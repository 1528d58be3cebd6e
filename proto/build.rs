//! Generates the ferry.v1 client and server code and the descriptor set used for reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("ferry_descriptor.bin"))
        .compile_protos(
            &[
                "ferry/v1/types.proto",
                "ferry/v1/control.proto",
                "ferry/v1/worker.proto",
            ],
            &["."],
        )?;
    Ok(())
}
