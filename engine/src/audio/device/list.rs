//! Listing devices for `sotto devices`: names, directions, defaults, and a summary of
//! the configurations each supports.

use cpal::traits::{DeviceTrait, HostTrait};

use super::config::{device_name, format_rank};
use crate::audio::{AudioError, SAMPLE_RATE};

/// One device as [`list_devices`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The human name (what `device:NAME` matches against, as is the id).
    pub name: String,
    /// The backend's id for the device (for ALSA the PCM name, such as `hw:CARD=0,DEV=0`).
    pub id: String,
    /// Whether it can capture.
    pub is_input: bool,
    /// Whether it can play.
    pub is_output: bool,
    /// Whether it is the system's default capture device.
    pub is_default_input: bool,
    /// Whether it is the system's default playback device.
    pub is_default_output: bool,
    /// What it captures, when that could be queried.
    pub input: Option<Capabilities>,
    /// What it plays, when that could be queried.
    pub output: Option<Capabilities>,
}

/// A summary of the stream configurations a device supports in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The lowest supported rate in Hz.
    pub min_rate: u32,
    /// The highest supported rate in Hz.
    pub max_rate: u32,
    /// Whether 48 kHz (the engine's rate, no resampling) is supported.
    pub has_48k: bool,
    /// Supported channel counts, ascending.
    pub channels: Vec<u16>,
    /// Supported sample formats, as cpal names them (`f32`, `i16`...).
    pub formats: Vec<String>,
}

impl std::fmt::Display for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min_rate == self.max_rate {
            write!(f, "{} Hz", self.min_rate)?;
        } else {
            write!(f, "{}-{} Hz", self.min_rate, self.max_rate)?;
        }
        write!(
            f,
            ", {} ch, {}",
            runs(&self.channels),
            self.formats.join("/")
        )?;
        if !self.has_48k {
            f.write_str(" (resampled to 48 kHz)")?;
        }
        Ok(())
    }
}

/// `1/2/6` for scattered counts, `1-64` for a run (counts ascending, deduplicated).
fn runs(counts: &[u16]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < counts.len() {
        let mut j = i;
        while j + 1 < counts.len() && counts[j + 1] == counts[j] + 1 {
            j += 1;
        }
        parts.push(match j - i {
            0 => counts[i].to_string(),
            1 => format!("{}/{}", counts[i], counts[j]),
            _ => format!("{}-{}", counts[i], counts[j]),
        });
        i = j + 1;
    }
    parts.join("/")
}

impl DeviceInfo {
    /// One line for `sotto devices`: name, id, directions, defaults and capabilities.
    pub fn summary(&self) -> String {
        let mut flags = Vec::new();
        if self.is_input {
            flags.push(if self.is_default_input {
                "input (default)"
            } else {
                "input"
            });
        }
        if self.is_output {
            flags.push(if self.is_default_output {
                "output (default)"
            } else {
                "output"
            });
        }
        let mut line = format!("{} [{}]: {}", self.name, self.id, flags.join(", "));
        if let Some(caps) = &self.input {
            line.push_str(&format!("; in: {caps}"));
        }
        if let Some(caps) = &self.output {
            line.push_str(&format!("; out: {caps}"));
        }
        line
    }
}

/// Lists the audio devices of the default host. An empty list is a normal answer on a
/// machine without sound hardware.
pub fn list_devices() -> Result<Vec<DeviceInfo>, AudioError> {
    let host = cpal::default_host();
    let default_in = host.default_input_device().and_then(|d| d.id().ok());
    let default_out = host.default_output_device().and_then(|d| d.id().ok());
    let devices = host
        .devices()
        .map_err(|e| AudioError::Device(format!("cannot list devices: {e}")))?;
    let mut list = Vec::new();
    for device in devices {
        let Ok(id) = device.id() else { continue };
        let name = device_name(&device);
        let input = if device.supports_input() {
            device
                .supported_input_configs()
                .ok()
                .and_then(|c| summarize(c.collect()))
        } else {
            None
        };
        let output = if device.supports_output() {
            device
                .supported_output_configs()
                .ok()
                .and_then(|c| summarize(c.collect()))
        } else {
            None
        };
        // A device that cannot be opened in either direction is no use to anyone.
        if input.is_none() && output.is_none() {
            continue;
        }
        list.push(DeviceInfo {
            name,
            id: id.id().to_owned(),
            is_input: input.is_some(),
            is_output: output.is_some(),
            is_default_input: input.is_some() && default_in.as_ref() == Some(&id),
            is_default_output: output.is_some() && default_out.as_ref() == Some(&id),
            input,
            output,
        });
    }
    Ok(list)
}

fn summarize(ranges: Vec<cpal::SupportedStreamConfigRange>) -> Option<Capabilities> {
    let usable: Vec<_> = ranges
        .into_iter()
        .filter(|r| format_rank(r.sample_format()).is_some() && r.channels() > 0)
        .collect();
    let min_rate = usable.iter().map(|r| r.min_sample_rate()).min()?;
    let max_rate = usable.iter().map(|r| r.max_sample_rate()).max()?;
    let mut channels: Vec<u16> = usable.iter().map(|r| r.channels()).collect();
    channels.sort_unstable();
    channels.dedup();
    let mut formats = Vec::new();
    for r in &usable {
        let name = r.sample_format().to_string();
        if !formats.contains(&name) {
            formats.push(name);
        }
    }
    Some(Capabilities {
        min_rate,
        max_rate,
        has_48k: usable.iter().any(|r| r.contains_rate(SAMPLE_RATE)),
        channels,
        formats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpal::{SampleFormat, SupportedBufferSize, SupportedStreamConfigRange};

    fn range(
        channels: u16,
        min: u32,
        max: u32,
        format: SampleFormat,
    ) -> SupportedStreamConfigRange {
        SupportedStreamConfigRange::new(channels, min, max, SupportedBufferSize::Unknown, format)
    }

    #[test]
    fn capabilities_read_well() {
        let caps = summarize(vec![
            range(2, 44_100, 48_000, SampleFormat::I16),
            range(1, 44_100, 48_000, SampleFormat::F32),
        ])
        .unwrap();
        assert_eq!(caps.to_string(), "44100-48000 Hz, 1/2 ch, i16/f32");
        assert_eq!(runs(&[1, 2, 3, 4, 6, 8, 9]), "1-4/6/8/9");
        assert_eq!(runs(&[]), "");
        let info = DeviceInfo {
            name: "USB Mic".into(),
            id: "hw:CARD=1,DEV=0".into(),
            is_input: true,
            is_output: false,
            is_default_input: true,
            is_default_output: false,
            input: Some(caps),
            output: None,
        };
        assert_eq!(
            info.summary(),
            "USB Mic [hw:CARD=1,DEV=0]: input (default); in: 44100-48000 Hz, 1/2 ch, i16/f32"
        );
    }
}
