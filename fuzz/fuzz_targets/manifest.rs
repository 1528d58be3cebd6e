//! Manifests come from storage anyone with bucket access can write: parsing any bytes may fail
//! but never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = ferry_model::manifest::BackupManifest::from_json(data) {
        let _ = manifest.app_spec.validate();
        let _ = manifest.to_json();
    }
});
