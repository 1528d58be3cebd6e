//! App manifests (YAML) as users and imported backups give them: parsing and validating any
//! text may fail but never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(spec) = ferry_model::app::AppSpec::from_yaml(text)
    {
        let _ = spec.validate();
    }
});
