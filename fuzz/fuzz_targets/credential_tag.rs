#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| civkit_fuzzing::Target::CredentialTag.run(data));
