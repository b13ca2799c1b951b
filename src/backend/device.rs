//! Choosing where to run: `--device auto|cpu|cuda[:N]`.
use crate::backend::cuda::conv_plan::ConvPrecision;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceRequest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::config(
                "device",
                format!("'{s}': expected auto, cpu, cuda or cuda:N"),
            )
        };
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" => Ok(DeviceRequest::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n.parse().map(DeviceRequest::Cuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

/// The device chosen, and a sentence saying why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu { why: String },
    Cuda { ordinal: usize, name: String },
}

impl Device {
    pub fn describe(&self) -> String {
        self.describe_at(ConvPrecision::default())
    }

    /// As `describe`, naming the convolutions' precision on the CPU where it is not f32.
    pub fn describe_at(&self, precision: ConvPrecision) -> String {
        match self {
            Device::Cpu { why } => {
                let engine = crate::tensor_ops::conv::conv_engine_name::<f32>(precision);
                let convs = match precision {
                    ConvPrecision::F32 => format!("convolutions by {engine}"),
                    p => format!("{p} convolutions by {engine}"),
                };
                format!(
                    "cpu ({} threads, {convs}): {why}",
                    rayon::current_num_threads()
                )
            }
            Device::Cuda { ordinal, name } => format!("cuda:{ordinal} ({name})"),
        }
    }
}

/// Resolves a request: `auto` takes CUDA when this binary has kernels and a device
/// answers, else the CPU; `cuda` fails with the reason when it cannot be used.
pub fn resolve(request: DeviceRequest) -> Result<Device> {
    match request {
        DeviceRequest::Cpu => Ok(Device::Cpu {
            why: "requested".into(),
        }),
        DeviceRequest::Cuda(ordinal) => match crate::backend::cuda::cuda_available() {
            Ok(name) => Ok(Device::Cuda { ordinal, name }),
            Err(why) => Err(Error::config(
                "device",
                format!("cuda:{ordinal} cannot be used: {why}"),
            )),
        },
        DeviceRequest::Auto => Ok(match crate::backend::cuda::cuda_available() {
            Ok(name) => Device::Cuda { ordinal: 0, name },
            Err(why) => Device::Cpu {
                why: format!("no usable GPU ({why})"),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_refuses_others() {
        assert_eq!(
            "auto".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Auto
        );
        assert_eq!("CPU".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cpu);
        assert_eq!(
            "cuda:1".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Cuda(1)
        );
        let err = "tpu".parse::<DeviceRequest>().unwrap_err().to_string();
        assert!(err.contains("tpu") && err.contains("cuda:N"), "{err}");
        assert!("cuda:x".parse::<DeviceRequest>().is_err());
        // Undocumented, and a name of no device kind: refused rather than read as cuda:0.
        let err = "gpu".parse::<DeviceRequest>().unwrap_err().to_string();
        assert!(
            err.contains("'gpu': expected auto, cpu, cuda or cuda:N"),
            "{err}"
        );
    }

    #[test]
    fn cpu_always_resolves_and_cuda_without_a_gpu_says_why() {
        assert!(matches!(
            resolve(DeviceRequest::Cpu).unwrap(),
            Device::Cpu { .. }
        ));
        match crate::backend::cuda::cuda_available() {
            Err(_) => {
                let err = resolve(DeviceRequest::Cuda(0)).unwrap_err().to_string();
                assert!(err.contains("cannot be used"), "{err}");
                assert!(matches!(
                    resolve(DeviceRequest::Auto).unwrap(),
                    Device::Cpu { .. }
                ));
            }
            Ok(_) => assert!(matches!(
                resolve(DeviceRequest::Auto).unwrap(),
                Device::Cuda { .. }
            )),
        }
    }
}
