//! Choosing a device (the default, or one by name) and the stream configuration to open
//! it with.

use cpal::traits::{DeviceTrait, HostTrait};
use cpal::{SampleFormat, SupportedStreamConfig};

use super::Direction;
use crate::audio::{AudioError, SAMPLE_RATE};

/// The device's human name, else its id.
pub(super) fn device_name(device: &cpal::Device) -> String {
    device
        .description()
        .map(|d| d.name().to_owned())
        .or_else(|_| device.id().map(|id| id.id().to_owned()))
        .unwrap_or_else(|_| "(unnamed)".to_owned())
}

/// How much we like a sample format (higher is better); `None` for formats we do not
/// convert (DSD).
pub(super) fn format_rank(format: SampleFormat) -> Option<u8> {
    Some(match format {
        SampleFormat::F32 => 12,
        SampleFormat::I16 => 11,
        SampleFormat::I32 => 10,
        SampleFormat::I24 => 9,
        SampleFormat::F64 => 8,
        SampleFormat::U16 => 7,
        SampleFormat::U32 => 6,
        SampleFormat::U24 => 5,
        SampleFormat::I8 => 4,
        SampleFormat::U8 => 3,
        SampleFormat::I64 => 2,
        SampleFormat::U64 => 1,
        _ => return None,
    })
}

/// Picks the stream configuration: 48 kHz when offered, then the best sample format, then
/// the fewest channels (mono, then stereo...). Without 48 kHz: the device's default rate,
/// else 44.1 kHz, else the nearest rate to 48 kHz.
fn choose_config(
    ranges: Vec<cpal::SupportedStreamConfigRange>,
    default: Option<SupportedStreamConfig>,
) -> Option<SupportedStreamConfig> {
    let key = |r: &cpal::SupportedStreamConfigRange| {
        (
            r.contains_rate(SAMPLE_RATE),
            format_rank(r.sample_format()).unwrap_or(0),
            std::cmp::Reverse(r.channels()),
        )
    };
    let usable = ranges
        .into_iter()
        .filter(|r| format_rank(r.sample_format()).is_some() && r.channels() > 0);
    let best = usable.max_by_key(key)?;
    if best.contains_rate(SAMPLE_RATE) {
        return best.try_with_sample_rate(SAMPLE_RATE);
    }
    if let Some(default) = default
        && best.contains_rate(default.sample_rate())
    {
        return best.try_with_sample_rate(default.sample_rate());
    }
    let rate = SAMPLE_RATE.clamp(best.min_sample_rate(), best.max_sample_rate());
    best.try_with_sample_rate(rate)
}

/// The device `name` selects (any part of its name or id, ignoring case), or the default.
pub(super) fn find_device(
    host: &cpal::Host,
    name: Option<&str>,
    direction: Direction,
) -> Result<cpal::Device, AudioError> {
    let kind = direction.kind();
    let Some(name) = name else {
        let device = match direction {
            Direction::Capture => host.default_input_device(),
            Direction::Playback => host.default_output_device(),
        };
        return device.ok_or(AudioError::NoDevice {
            kind,
            detail: String::new(),
        });
    };
    let wanted = name.to_lowercase();
    let devices = host
        .devices()
        .map_err(|e| AudioError::Device(format!("cannot list devices: {e}")))?;
    for device in devices {
        let supports = match direction {
            Direction::Capture => device.supports_input(),
            Direction::Playback => device.supports_output(),
        };
        if !supports {
            continue;
        }
        let id = device
            .id()
            .map(|id| id.id().to_lowercase())
            .unwrap_or_default();
        if device_name(&device).to_lowercase().contains(&wanted) || id.contains(&wanted) {
            return Ok(device);
        }
    }
    Err(AudioError::NoDevice {
        kind,
        detail: format!(": none matches {name:?} (`sotto devices` lists them)"),
    })
}

/// The configuration to open `device` with. A device whose configurations cannot even be
/// queried is treated as absent (ALSA offers a "default" device on machines without any
/// sound card).
pub(super) fn device_config(
    device: &cpal::Device,
    direction: Direction,
) -> Result<SupportedStreamConfig, AudioError> {
    let (ranges, default) = match direction {
        Direction::Capture => (
            device.supported_input_configs().map(|r| r.collect()),
            device.default_input_config().ok(),
        ),
        Direction::Playback => (
            device.supported_output_configs().map(|r| r.collect()),
            device.default_output_config().ok(),
        ),
    };
    let ranges: Vec<_> = ranges.map_err(|e| AudioError::NoDevice {
        kind: direction.kind(),
        detail: format!(": {} cannot be opened ({e})", device_name(device)),
    })?;
    choose_config(ranges, default).ok_or_else(|| AudioError::NoDevice {
        kind: direction.kind(),
        detail: format!(
            ": {} offers no {} format Sotto can use",
            device_name(device),
            direction.kind()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpal::{SupportedBufferSize, SupportedStreamConfigRange};

    fn range(
        channels: u16,
        min: u32,
        max: u32,
        format: SampleFormat,
    ) -> SupportedStreamConfigRange {
        SupportedStreamConfigRange::new(channels, min, max, SupportedBufferSize::Unknown, format)
    }

    #[test]
    fn config_prefers_48k_then_format_then_fewer_channels() {
        let chosen = choose_config(
            vec![
                range(2, 44_100, 44_100, SampleFormat::F32),
                range(2, 8_000, 96_000, SampleFormat::I16),
                range(1, 8_000, 96_000, SampleFormat::I16),
                range(6, 48_000, 48_000, SampleFormat::F32),
                range(2, 48_000, 48_000, SampleFormat::DsdU8),
            ],
            None,
        )
        .unwrap();
        assert_eq!(chosen.sample_rate(), 48_000);
        assert_eq!(chosen.sample_format(), SampleFormat::F32);
        assert_eq!(chosen.channels(), 6);

        let chosen = choose_config(
            vec![
                range(2, 8_000, 96_000, SampleFormat::I16),
                range(1, 8_000, 96_000, SampleFormat::I16),
            ],
            None,
        )
        .unwrap();
        assert_eq!((chosen.channels(), chosen.sample_rate()), (1, 48_000));
    }

    #[test]
    fn config_without_48k_takes_the_default_or_nearest_rate() {
        let only_44 = vec![range(2, 44_100, 44_100, SampleFormat::I16)];
        assert_eq!(choose_config(only_44, None).unwrap().sample_rate(), 44_100);
        let low = vec![range(1, 8_000, 16_000, SampleFormat::U8)];
        assert_eq!(choose_config(low, None).unwrap().sample_rate(), 16_000);
        assert!(
            choose_config(vec![range(2, 48_000, 48_000, SampleFormat::DsdU32)], None).is_none()
        );
        assert!(choose_config(Vec::new(), None).is_none());
    }
}
