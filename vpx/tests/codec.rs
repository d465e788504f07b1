//! The libvpx wrapper against real libvpx: round trips, keyframes on request, bitrate
//! changes, temporal layers that decode without the upper layers, simulcast, and bad input
//! (corrupt frames, a stream without a keyframe, planes too small) that errors, never
//! panics.

use sotto_vpx::{
    DecodedFrame, EncodedFrame, EncoderConfig, I420, SimulcastEncoder, SimulcastLayer, Vp8Decoder,
    Vp8Encoder, VpxError,
};

/// A tightly packed I420 picture of a moving scene: a diagonal gradient sliding right and a
/// bright square crossing it.
struct Picture {
    width: u32,
    height: u32,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
}

impl Picture {
    fn scene(width: u32, height: u32, frame: u32) -> Picture {
        let (w, h) = (width as usize, height as usize);
        let mut y = vec![0u8; w * h];
        let shift = frame as usize * 3;
        let square = (frame as usize * 5) % w.max(1);
        for row in 0..h {
            for col in 0..w {
                let mut value = ((col + row + shift) % 200) as u8 + 28;
                if col >= square && col < square + w / 8 && row >= h / 3 && row < h / 3 + h / 6 {
                    value = 235;
                }
                y[row * w + col] = value;
            }
        }
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let u = (0..cw * ch)
            .map(|i| (100 + (i + shift) % 50) as u8)
            .collect();
        let v = (0..cw * ch).map(|i| (150 - (i % 40)) as u8).collect();
        Picture {
            width,
            height,
            y,
            u,
            v,
        }
    }

    fn view(&self) -> I420<'_> {
        I420 {
            width: self.width,
            height: self.height,
            y: &self.y,
            u: &self.u,
            v: &self.v,
            y_stride: self.width as usize,
            uv_stride: self.width.div_ceil(2) as usize,
        }
    }
}

/// Luma PSNR in dB.
fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        return 99.0;
    }
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

const PTS_STEP: i64 = 3000; // 30 fps at 90 kHz

fn encode_one(encoder: &mut Vp8Encoder, picture: &Picture, n: i64, key: bool) -> EncodedFrame {
    let mut frames = encoder
        .encode(&picture.view(), n * PTS_STEP, key)
        .expect("encode");
    assert_eq!(frames.len(), 1, "frame {n}: one frame out");
    frames.remove(0)
}

fn decode(decoder: &mut Vp8Decoder, frame: &EncodedFrame) -> DecodedFrame {
    decoder
        .decode(&frame.data)
        .expect("decode")
        .expect("a picture")
}

fn no_dropping(width: u32, height: u32, bitrate_bps: u32) -> EncoderConfig {
    EncoderConfig {
        frame_dropping: false,
        ..EncoderConfig::realtime(width, height, 30, bitrate_bps)
    }
}

#[test]
fn a_round_trip_keeps_the_picture() {
    let mut encoder = Vp8Encoder::new(no_dropping(320, 180, 600_000)).unwrap();
    let mut decoder = Vp8Decoder::new(1).unwrap();
    let mut worst: f64 = 99.0;
    for n in 0..60 {
        let picture = Picture::scene(320, 180, n);
        let frame = encode_one(&mut encoder, &picture, i64::from(n), false);
        assert_eq!(frame.keyframe, n == 0, "only the first frame is a keyframe");
        assert_eq!(frame.pts, i64::from(n) * PTS_STEP);
        let decoded = decode(&mut decoder, &frame);
        assert_eq!((decoded.width, decoded.height), (320, 180));
        assert_eq!(decoded.u.len(), 160 * 90);
        assert!(!decoded.corrupted);
        if n >= 10 {
            worst = worst.min(psnr(&picture.y, &decoded.y));
        }
    }
    assert!(worst > 30.0, "luma PSNR after warm-up {worst:.1} dB");
}

#[test]
fn odd_sizes_round_trip() {
    let mut encoder = Vp8Encoder::new(no_dropping(161, 91, 200_000)).unwrap();
    let mut decoder = Vp8Decoder::new(1).unwrap();
    let picture = Picture::scene(161, 91, 0);
    let frame = encode_one(&mut encoder, &picture, 0, false);
    let decoded = decode(&mut decoder, &frame);
    assert_eq!((decoded.width, decoded.height), (161, 91));
    assert_eq!(decoded.u.len(), 81 * 46);
    assert!(psnr(&picture.y, &decoded.y) > 25.0);
}

#[test]
fn keyframes_come_when_asked() {
    let mut encoder = Vp8Encoder::new(no_dropping(320, 180, 400_000)).unwrap();
    let mut keys = Vec::new();
    for n in 0..30 {
        let frame = encode_one(
            &mut encoder,
            &Picture::scene(320, 180, n),
            i64::from(n),
            n == 17,
        );
        if frame.keyframe {
            keys.push(n);
        }
    }
    assert_eq!(keys, vec![0, 17]);
}

#[test]
fn the_bitrate_changes_mid_stream() {
    let mut encoder = Vp8Encoder::new(no_dropping(320, 180, 800_000)).unwrap();
    let mut bytes = [0usize; 2];
    for n in 0..120 {
        if n == 60 {
            encoder.set_bitrate(150_000).unwrap();
        }
        let frame = encode_one(
            &mut encoder,
            &Picture::scene(320, 180, n),
            i64::from(n),
            false,
        );
        // Skip each half's first 20 frames: the rate control needs them to settle.
        if n % 60 >= 20 {
            bytes[(n / 60) as usize] += frame.data.len();
        }
    }
    let kbps = |b: usize| b as f64 * 8.0 / (40.0 / 30.0) / 1000.0;
    let (before, after) = (kbps(bytes[0]), kbps(bytes[1]));
    assert!(before > 2.5 * after, "{before:.0} kbit/s, then {after:.0}");
    assert!(after < 250.0, "{after:.0} kbit/s at a 150 kbit/s target");
    assert_eq!(encoder.config().bitrate_bps, 150_000);
}

#[test]
fn three_temporal_layers_follow_the_pattern_and_the_base_decodes_alone() {
    let config = EncoderConfig {
        temporal_layers: 3,
        ..no_dropping(320, 180, 500_000)
    };
    let mut encoder = Vp8Encoder::new(config).unwrap();
    let mut base_only = Vp8Decoder::new(1).unwrap();
    let mut up_to_one = Vp8Decoder::new(1).unwrap();
    let mut layers = Vec::new();
    for n in 0..40 {
        let picture = Picture::scene(320, 180, n);
        let frame = encode_one(&mut encoder, &picture, i64::from(n), false);
        layers.push(frame.temporal_layer);
        if frame.temporal_layer == 0 {
            let decoded = decode(&mut base_only, &frame);
            assert!(!decoded.corrupted, "frame {n}: base layer alone");
            if n >= 8 {
                assert!(psnr(&picture.y, &decoded.y) > 28.0, "frame {n}");
            }
        }
        if frame.temporal_layer <= 1 {
            let decoded = decode(&mut up_to_one, &frame);
            assert!(!decoded.corrupted, "frame {n}: layers 0 and 1");
        }
    }
    assert_eq!(&layers[..8], &[0, 2, 1, 2, 0, 2, 1, 2]);
}

#[test]
fn a_keyframe_restarts_the_temporal_pattern_on_the_base_layer() {
    let config = EncoderConfig {
        temporal_layers: 2,
        ..no_dropping(320, 180, 500_000)
    };
    let mut encoder = Vp8Encoder::new(config).unwrap();
    let mut seen = Vec::new();
    for n in 0..8 {
        let frame = encode_one(
            &mut encoder,
            &Picture::scene(320, 180, n),
            i64::from(n),
            n == 3,
        );
        seen.push((frame.temporal_layer, frame.keyframe));
    }
    assert_eq!(seen[3], (0, true));
    assert_eq!(seen[4], (1, false));
}

#[test]
fn simulcast_layers_decode_at_their_sizes_with_their_own_keyframes() {
    let sizes = [(640, 360), (320, 180), (160, 90)];
    let layers = sizes
        .iter()
        .zip([900_000, 300_000, 100_000])
        .map(|(&(width, height), bitrate_bps)| SimulcastLayer {
            width,
            height,
            bitrate_bps,
        })
        .collect();
    let mut encoder = SimulcastEncoder::new(layers, no_dropping(640, 360, 0)).unwrap();
    let mut decoders: Vec<Vp8Decoder> = (0..3).map(|_| Vp8Decoder::new(1).unwrap()).collect();
    let mut keys = vec![Vec::new(); 3];
    for n in 0..20u32 {
        let pictures: Vec<Picture> = sizes
            .iter()
            .map(|&(w, h)| Picture::scene(w, h, n))
            .collect();
        let views: Vec<I420<'_>> = pictures.iter().map(Picture::view).collect();
        let ask = [false, n == 10, false];
        let out = encoder
            .encode(&views, i64::from(n) * PTS_STEP, &ask)
            .unwrap();
        for (i, frames) in out.iter().enumerate() {
            assert_eq!(frames.len(), 1, "layer {i} frame {n}");
            if frames[0].keyframe {
                keys[i].push(n);
            }
            let decoded = decode(&mut decoders[i], &frames[0]);
            assert_eq!((decoded.width, decoded.height), sizes[i]);
            if n >= 5 {
                let quality = psnr(&pictures[i].y, &decoded.y);
                assert!(quality > 26.0, "layer {i} frame {n}: {quality:.1} dB");
            }
        }
    }
    assert_eq!(keys[0], vec![0]);
    assert_eq!(keys[1], vec![0, 10]);
    assert_eq!(keys[2], vec![0]);
}

#[test]
fn a_simulcast_layer_at_zero_is_not_encoded_and_comes_back_with_a_keyframe() {
    let layers = vec![
        SimulcastLayer {
            width: 320,
            height: 180,
            bitrate_bps: 400_000,
        },
        SimulcastLayer {
            width: 160,
            height: 90,
            bitrate_bps: 100_000,
        },
    ];
    let mut encoder = SimulcastEncoder::new(layers, no_dropping(320, 180, 0)).unwrap();
    let mut produced = [0usize; 2];
    let mut first_back = None;
    for n in 0..30u32 {
        if n == 5 {
            encoder.set_bitrate(0, 0).unwrap();
        }
        if n == 20 {
            encoder.set_bitrate(0, 400_000).unwrap();
        }
        let big = Picture::scene(320, 180, n);
        let small = Picture::scene(160, 90, n);
        let out = encoder
            .encode(
                &[big.view(), small.view()],
                i64::from(n) * PTS_STEP,
                &[n == 20, false],
            )
            .unwrap();
        for (i, frames) in out.iter().enumerate() {
            produced[i] += frames.len();
        }
        if n == 20 {
            first_back = out[0].first().map(|f| f.keyframe);
        }
    }
    assert_eq!(produced, [5 + 10, 30], "the paused layer is skipped");
    assert_eq!(first_back, Some(true));
}

#[test]
fn bad_pictures_and_configurations_are_refused() {
    let mut encoder = Vp8Encoder::new(no_dropping(320, 180, 300_000)).unwrap();
    let picture = Picture::scene(320, 180, 0);
    let short = I420 {
        y: &picture.y[..1000],
        ..picture.view()
    };
    assert!(matches!(
        encoder.encode(&short, 0, false),
        Err(VpxError::InvalidInput(_))
    ));
    let narrow = I420 {
        y_stride: 100,
        ..picture.view()
    };
    assert!(matches!(
        encoder.encode(&narrow, 0, false),
        Err(VpxError::InvalidInput(_))
    ));
    let other = Picture::scene(160, 90, 0);
    assert!(encoder.encode(&other.view(), 0, false).is_err());
    // Still works afterwards.
    assert_eq!(encoder.encode(&picture.view(), 0, false).unwrap().len(), 1);
    assert!(Vp8Encoder::new(no_dropping(0, 180, 300_000)).is_err());
    assert!(
        Vp8Encoder::new(EncoderConfig {
            temporal_layers: 4,
            ..no_dropping(320, 180, 300_000)
        })
        .is_err()
    );
}

/// A deterministic byte generator for the corruption tests (xorshift).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.max(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn corrupt_input_is_an_error_or_a_corrupted_picture_never_a_panic() {
    let mut encoder = Vp8Encoder::new(no_dropping(320, 180, 400_000)).unwrap();
    let frames: Vec<EncodedFrame> = (0..12)
        .map(|n| {
            encode_one(
                &mut encoder,
                &Picture::scene(320, 180, n),
                i64::from(n),
                false,
            )
        })
        .collect();
    let mut decoder = Vp8Decoder::new(1).unwrap();

    // A stream that starts without a keyframe.
    assert!(decoder.decode(&frames[3].data).is_err());
    // Empty, random and truncated data.
    assert!(matches!(
        decoder.decode(&[]),
        Err(VpxError::InvalidInput(_))
    ));
    for seed in 1..200 {
        let _ = decoder.decode(&noise(seed, (seed as usize * 37) % 3000 + 1));
    }
    for cut in [1, 3, 9, 10, 20, frames[0].data.len() / 2] {
        let _ = decoder.decode(&frames[0].data[..cut]);
    }
    // A good keyframe decodes after all that.
    let picture = decode(&mut decoder, &frames[0]);
    assert_eq!((picture.width, picture.height), (320, 180));
    // Bits flipped in inter frames: errors or damaged pictures, then recovery at the next
    // keyframe.
    for (n, frame) in frames.iter().enumerate().skip(1) {
        let mut damaged = frame.data.clone();
        for (i, byte) in damaged.iter_mut().enumerate().skip(3) {
            if i % 7 == n % 7 {
                *byte ^= 0x5a;
            }
        }
        let _ = decoder.decode(&damaged);
    }
    let mut again = Vp8Encoder::new(no_dropping(320, 180, 400_000)).unwrap();
    let key = encode_one(&mut again, &Picture::scene(320, 180, 0), 0, true);
    let picture = decode(&mut decoder, &key);
    assert!(!picture.corrupted);
}

#[test]
fn a_resolution_change_mid_stream_decodes() {
    let mut decoder = Vp8Decoder::new(1).unwrap();
    let mut big = Vp8Encoder::new(no_dropping(320, 180, 400_000)).unwrap();
    let mut small = Vp8Encoder::new(no_dropping(160, 90, 100_000)).unwrap();
    for n in 0..3 {
        let frame = encode_one(&mut big, &Picture::scene(320, 180, n), i64::from(n), false);
        assert_eq!(decode(&mut decoder, &frame).width, 320);
    }
    for n in 3..6 {
        let frame = encode_one(&mut small, &Picture::scene(160, 90, n), i64::from(n), false);
        assert_eq!(decode(&mut decoder, &frame).width, 160);
    }
}

#[test]
fn the_library_says_its_version() {
    assert!(sotto_vpx::version().starts_with('v'));
}
