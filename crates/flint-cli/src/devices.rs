//! The devices each compiled-in backend finds on this machine, for `flint info`.

/// One line per device the backend can run on, or why it found none.
pub fn describe(backend: crate::Backend) -> Vec<String> {
    match backend {
        crate::Backend::Flex | crate::Backend::Ndarray => vec![format!(
            "cpu: {} hardware threads",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        )],
        crate::Backend::Wgpu => wgpu_adapters(),
        crate::Backend::Cuda => cuda_devices(),
    }
}

/// The CUDA devices burn finds (through the driver, loaded at run time).
#[cfg(feature = "cuda")]
fn cuda_devices() -> Vec<String> {
    let devices = burn::tensor::Device::enumerate(burn::tensor::DeviceType::Cuda);
    if devices.is_empty() {
        return vec!["no CUDA device found (is the NVIDIA driver installed?)".to_string()];
    }
    devices
        .iter()
        .enumerate()
        .map(|(i, device)| format!("{i}: {device:?}"))
        .collect()
}

#[cfg(not(feature = "cuda"))]
fn cuda_devices() -> Vec<String> {
    vec!["not compiled in".to_string()]
}

/// The adapters wgpu enumerates on every graphics API it was built with. Asking does not start
/// a device, so it is cheap and never fails: no adapter is a line that says so.
#[cfg(feature = "wgpu")]
fn wgpu_adapters() -> Vec<String> {
    use burn::backend::wgpu::wgpu;

    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapters = block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    if adapters.is_empty() {
        return vec![
            "no adapter found (install a Vulkan driver; on a machine without a GPU, Mesa's \
             lavapipe: `apt-get install mesa-vulkan-drivers`)"
                .to_string(),
        ];
    }
    let mut lines: Vec<String> = adapters
        .iter()
        .map(|adapter| {
            let info = adapter.get_info();
            let driver = [info.driver.as_str(), info.driver_info.as_str()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            format!(
                "{:?} {:?}: {}{}",
                info.backend,
                info.device_type,
                info.name,
                if driver.is_empty() {
                    String::new()
                } else {
                    format!(" ({driver})")
                }
            )
        })
        .collect();
    lines.push(
        "`--backend wgpu` takes the best of these; CUBECL_WGPU_DEFAULT_DEVICE (e.g. \
         `DiscreteGpu(1)`, `Cpu`) picks another"
            .to_string(),
    );
    lines
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_adapters() -> Vec<String> {
    vec!["not compiled in".to_string()]
}

/// Polls a future to completion on this thread. wgpu's native adapter enumeration is ready on
/// the first poll; the loop only guards against a backend that is not.
#[cfg(feature = "wgpu")]
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
        std::thread::yield_now();
    }
}
