#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cxr_search::fuzzing::dicom_ingest(data);
});
