//! The GPU layer: CUDA loaded at run time through cudarc (`dynamic-loading`), kernels compiled
//! from the `.cu` sources in `kernels/cuda/` with NVRTC at start-up (PTX for compute_90), one
//! stream per [`Gpu`]. Builds without CUDA; every entry point reports a missing driver, device
//! or library as a [`CudaError`] instead of panicking (cudarc panics when a library is absent,
//! so each one is probed first).

pub mod attention;
pub mod check;
pub mod fbank;

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr};
use cudarc::driver::{LaunchConfig, PushKernelArg, ValidAsZeroBits};

/// One `.cu` file and the kernels it must define.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub name: &'static str,
    pub text: &'static str,
    pub entries: &'static [&'static str],
}

pub const LLM_SOURCE: Source = Source {
    name: "llm.cu",
    text: include_str!("../../cuda/llm.cu"),
    entries: &[
        "fill_bf16_hash",
        "fill_f32",
        "embed_rows",
        "rms_norm_bf16",
        "qkv_rope_append",
        "attention_split",
        "attention_merge",
        "silu_mul_bf16",
        "sample_rows",
    ],
};

pub const FBANK_SOURCE: Source = Source {
    name: "fbank.cu",
    text: include_str!("../../cuda/fbank.cu"),
    entries: &["fbank_frames"],
};

/// Every kernel source the project ships.
pub const SOURCES: [Source; 2] = [LLM_SOURCE, FBANK_SOURCE];

/// The virtual architecture we compile for (Hopper: H100/H200). Driver 580 accepts the PTX
/// `.version 9.0` that NVRTC 13.0 emits for it.
pub const ARCH: &str = "compute_90";

const LIB_HINT: &str = "set LD_LIBRARY_PATH to the CUDA 13 libraries (e.g. the pip wheels' \
                        site-packages/nvidia/cu13/lib and the driver's lib64), or run with --device cpu";

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver found (libcuda could not be loaded); {LIB_HINT}")]
    NoDriver,
    #[error("no CUDA device {ordinal}: the driver reports {count} device(s)")]
    NoDevice { ordinal: usize, count: usize },
    #[error("NVRTC (libnvrtc.so.13) not found; {LIB_HINT}")]
    NoNvrtc,
    #[error("cuBLAS (libcublas.so.13 / libcublasLt.so.13) not found; {LIB_HINT}")]
    NoCublas,
    #[error("NVRTC could not compile {name}: {log}")]
    Compile { name: &'static str, log: String },
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    #[error("cuBLAS: {0:?}")]
    Blas(cudarc::cublas::result::CublasError),
    #[error("{0}")]
    Invalid(String),
}

impl From<cudarc::cublas::result::CublasError> for CudaError {
    fn from(e: cudarc::cublas::result::CublasError) -> Self {
        Self::Blas(e)
    }
}

/// Whether libnvrtc can be loaded (checked before any NVRTC call, which would panic without it).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names; no symbol is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether the CUDA driver library can be loaded.
pub fn driver_available() -> bool {
    // SAFETY: as above, a dlopen attempt only.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether cuBLAS and cuBLASLt can be loaded.
pub fn cublas_available() -> bool {
    // SAFETY: as above, dlopen attempts only.
    unsafe { cudarc::cublas::sys::is_culib_present() && cudarc::cublaslt::sys::is_culib_present() }
}

/// Compile one source to PTX text with NVRTC. Needs only libnvrtc (no GPU).
pub fn compile_ptx(src: &Source) -> Result<String, CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc);
    }
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some(ARCH),
        name: Some(src.name.to_string()),
        // Precise division and square root: the CPU twins are the reference.
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ..Default::default()
    };
    match cudarc::nvrtc::compile_ptx_with_opts(src.text, opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => Err(CudaError::Compile {
            name: src.name,
            log: log.to_string_lossy().into_owned(),
        }),
        Err(e) => Err(CudaError::Compile {
            name: src.name,
            log: e.to_string(),
        }),
    }
}

/// [`compile_ptx`], once per source per process: NVRTC takes a few hundred milliseconds and
/// every model or engine that opens the GPU loads the same sources. Write-once memos of a
/// pure function of the (compiled-in) source text.
fn cached_ptx(src: &Source) -> Result<String, CudaError> {
    use std::sync::OnceLock;
    static LLM: OnceLock<String> = OnceLock::new();
    static FBANK: OnceLock<String> = OnceLock::new();
    let cell = match src.name {
        n if n == LLM_SOURCE.name => &LLM,
        n if n == FBANK_SOURCE.name => &FBANK,
        _ => return compile_ptx(src),
    };
    if let Some(ptx) = cell.get() {
        return Ok(ptx.clone());
    }
    let ptx = compile_ptx(src)?;
    Ok(cell.get_or_init(|| ptx).clone())
}

/// What a probe found.
#[derive(Debug, Clone)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub memory_bytes: usize,
    pub compute_capability: (i32, i32),
}

impl std::fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cuda:{} {} ({:.0} GiB, sm_{}{})",
            self.ordinal,
            self.name,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.compute_capability.0,
            self.compute_capability.1
        )
    }
}

/// Check that device `ordinal` can be used, without keeping it open.
pub fn probe(ordinal: usize) -> Result<GpuInfo, CudaError> {
    Ok(Gpu::open(ordinal)?.info)
}

/// An open device with one stream: everything launched through it runs in order.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub info: GpuInfo,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("info", &self.info).finish()
    }
}

impl Gpu {
    pub fn open(ordinal: usize) -> Result<Self, CudaError> {
        if !driver_available() {
            return Err(CudaError::NoDriver);
        }
        cudarc::driver::result::init()?;
        let count = cudarc::driver::result::device::get_count()?.max(0) as usize;
        if ordinal >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal)?;
        // SAFETY: all work of this context goes through the one stream below, in order, so
        // cudarc's cross-stream read/write events are not needed.
        unsafe { ctx.disable_event_tracking() };
        // An own stream, not the legacy default one, which cannot be captured into graphs.
        let stream = ctx.new_stream()?;
        let info = GpuInfo {
            ordinal,
            name: ctx.name()?,
            memory_bytes: ctx.total_mem()?,
            compute_capability: ctx.compute_capability()?,
        };
        Ok(Self { ctx, stream, info })
    }

    /// Compile `src` (once per process) and load all its entries.
    pub fn load(&self, src: &Source) -> Result<Kernels, CudaError> {
        let ptx = cached_ptx(src)?;
        let module = self.ctx.load_module(cudarc::nvrtc::Ptx::from_src(ptx))?;
        let mut funcs = HashMap::new();
        for &e in src.entries {
            funcs.insert(e, module.load_function(e)?);
        }
        Ok(Kernels { funcs })
    }

    /// Zeroed device memory.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>, CudaError> {
        Ok(self.stream.alloc_zeros(len.max(1))?)
    }

    /// Copy host data to new device memory.
    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> Result<CudaSlice<T>, CudaError> {
        if data.is_empty() {
            return Err(CudaError::Invalid("cannot upload an empty buffer".into()));
        }
        Ok(self.stream.clone_htod(data)?)
    }

    /// Copy host data into existing device memory (which must be at least as long).
    pub fn write<T: DeviceRepr>(
        &self,
        data: &[T],
        dst: &mut CudaSlice<T>,
    ) -> Result<(), CudaError> {
        if data.len() > dst.len() {
            return Err(CudaError::Invalid(format!(
                "write of {} elements into a buffer of {}",
                data.len(),
                dst.len()
            )));
        }
        if data.is_empty() {
            return Ok(());
        }
        let mut view = dst.slice_mut(..data.len());
        self.stream.memcpy_htod(data, &mut view)?;
        Ok(())
    }

    /// Copy the first `len` elements of device memory back (waits for the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(
        &self,
        src: &CudaSlice<T>,
        len: usize,
    ) -> Result<Vec<T>, CudaError> {
        let mut out = vec![T::default(); len];
        if len > 0 {
            self.stream.memcpy_dtoh(&src.slice(..len), &mut out)?;
        }
        Ok(out)
    }

    pub fn sync(&self) -> Result<(), CudaError> {
        Ok(self.stream.synchronize()?)
    }

    /// The raw device address of a buffer, for kernel arguments and cuBLAS.
    pub fn ptr<T>(&self, s: &CudaSlice<T>) -> u64 {
        // With event tracking off the guard records nothing; dropping it at once is fine.
        let (p, _guard) = s.device_ptr(&self.stream);
        p
    }

    /// Launch `f` with the given arguments (each pushed by reference, in order).
    pub fn launch(
        &self,
        f: &CudaFunction,
        grid: (u32, u32, u32),
        block: u32,
        args: &[&dyn KernelArg],
    ) -> Result<(), CudaError> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        let mut b = self.stream.launch_builder(f);
        for a in args {
            a.push(&mut b);
        }
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: every caller passes arguments matching the kernel's C signature in count, order
        // and type (scalars by value, buffers as u64 device addresses of live allocations sized
        // for the grid); each wrapper documents its kernel's contract next to the launch.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }
}

/// A scalar kernel argument (u64 device addresses included).
pub trait KernelArg {
    fn push<'a>(&'a self, b: &mut cudarc::driver::LaunchArgs<'a>);
}

macro_rules! kernel_arg {
    ($($t:ty),*) => {$(
        impl KernelArg for $t {
            fn push<'a>(&'a self, b: &mut cudarc::driver::LaunchArgs<'a>) {
                b.arg(self);
            }
        }
    )*};
}
kernel_arg!(u64, i64, u32, i32, f32);

/// The loaded entries of one source.
pub struct Kernels {
    funcs: HashMap<&'static str, CudaFunction>,
}

impl Kernels {
    /// Registers, spilled bytes and static shared memory of each kernel, as the driver compiled
    /// them for this device ("name regs/local/shared").
    pub fn resources(&self) -> Vec<String> {
        let mut names: Vec<_> = self.funcs.keys().copied().collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let f = &self.funcs[n];
                format!(
                    "{n} {}/{}/{}",
                    f.num_regs().unwrap_or(-1),
                    f.local_size_bytes().unwrap_or(-1),
                    f.shared_size_bytes().unwrap_or(-1)
                )
            })
            .collect()
    }

    pub fn get(&self, name: &str) -> Result<&CudaFunction, CudaError> {
        self.funcs
            .get(name)
            .ok_or_else(|| CudaError::Invalid(format!("kernel {name} not loaded")))
    }
}

/// Convert f32 values to bf16 bit patterns (round to nearest even, like the kernels).
pub fn to_bf16_bits(xs: &[f32]) -> Vec<u16> {
    xs.iter()
        .map(|&x| half::bf16::from_f32(x).to_bits())
        .collect()
}
