//! Embeds the console's build (`web/dist`, committed; `web/build.sh` makes it) in the
//! gateway: writes `$OUT_DIR/console_assets.rs`, a table of every file with its
//! `include_bytes!`, its gzip copy (`<file>.gz`, made by the web build) and an ETag
//! of its content. Only std: the gateway's build needs neither Node nor a crate more.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_none_or(|e| e != "gz") {
            out.push(path);
        }
    }
}

/// FNV-1a, 64 bits: enough to tell two builds of a file apart (an ETag, not a MAC).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn main() {
    let dist = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("web/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut found = Vec::new();
    files(&dist, &mut found);
    found.sort();
    let mut table = String::from("pub static ASSETS: &[Asset] = &[\n");
    for path in &found {
        let name = path
            .strip_prefix(&dist)
            .expect("under dist")
            .to_string_lossy()
            .replace('\\', "/");
        let bytes = fs::read(path).expect("reading a console asset");
        let gz = PathBuf::from(format!("{}.gz", path.display()));
        let gzip = if gz.is_file() {
            format!("Some(include_bytes!({:?}))", gz.display().to_string())
        } else {
            "None".to_owned()
        };
        println!("cargo:rerun-if-changed={}", path.display());
        table += &format!(
            "    Asset {{ path: {name:?}, body: include_bytes!({:?}), gzip: {gzip}, etag: \"\\\"{:016x}\\\"\" }},\n",
            path.display().to_string(),
            fnv(&bytes),
        );
    }
    table += "];\n";
    let out = Path::new(&env::var("OUT_DIR").expect("set by cargo")).join("console_assets.rs");
    fs::write(out, table).expect("writing console_assets.rs");
}
