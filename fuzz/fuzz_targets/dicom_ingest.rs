#![no_main]

use libfuzzer_sys::fuzz_target;

// As in `cxr`: single allocations while a DICOM file is parsed are bounded by its length.
#[global_allocator]
static ALLOCATOR: cxr_search::ingest::alloc_ceiling::CeilingAllocator =
    cxr_search::ingest::alloc_ceiling::CeilingAllocator::system();

fuzz_target!(|data: &[u8]| {
    let _ = cxr_search::fuzzing::dicom_ingest(data);
});
