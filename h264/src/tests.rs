#![allow(clippy::unwrap_used)]

use super::*;

/// A moving gradient with a bright square, `n` frames in.
fn picture(width: u32, height: u32, n: u32) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (w, h) = (width as usize, height as usize);
    let mut y = vec![0u8; w * h];
    for row in 0..h {
        for col in 0..w {
            y[row * w + col] = ((col + row + n as usize * 4) % 200) as u8;
        }
    }
    // Noise that changes every frame, so that a higher bitrate has something to buy.
    let mut state = n.wrapping_mul(2_654_435_761).wrapping_add(1);
    for pixel in y.iter_mut().step_by(3) {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        *pixel = pixel.wrapping_add((state % 24) as u8);
    }
    let square = (n as usize * 3) % (w - 16);
    for row in 8..24 {
        for col in square..square + 16 {
            y[row * w + col] = 250;
        }
    }
    (y, vec![128u8; w * h / 4], vec![100u8; w * h / 4])
}

fn encoder(width: u32, height: u32, bitrate_bps: u32) -> H264Encoder {
    H264Encoder::new(EncoderConfig {
        width,
        height,
        fps: 30,
        bitrate_bps,
    })
    .unwrap()
}

fn encode(encoder: &mut H264Encoder, n: u32, keyframe: bool) -> Option<EncodedFrame> {
    let (width, height) = (encoder.config().width, encoder.config().height);
    let (y, u, v) = picture(width, height, n);
    let yuv = Yuv {
        width,
        height,
        y: &y,
        u: &u,
        v: &v,
        y_stride: width as usize,
        uv_stride: width as usize / 2,
    };
    encoder.encode(&yuv, keyframe).unwrap()
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-9)).log10()
}

#[test]
fn frames_decode_to_the_pictures_they_came_from() {
    let mut enc = encoder(320, 180, 600_000);
    let mut dec = H264Decoder::new().unwrap();
    let mut decoded = 0;
    for n in 0..30 {
        let Some(frame) = encode(&mut enc, n, false) else {
            continue;
        };
        assert_eq!(frame.keyframe, n == 0, "only the first frame is an IDR");
        if n == 0 {
            let types: Vec<u8> = nal_units(&frame.data)
                .iter()
                .filter_map(|u| nal_type(u))
                .collect();
            assert!(types.starts_with(&[NAL_SPS, NAL_PPS]), "{types:?}");
        }
        let picture = dec
            .decode(&frame.data)
            .unwrap()
            .expect("a picture per frame");
        assert_eq!((picture.width, picture.height), (320, 180));
        let (y, _, _) = self::picture(320, 180, n);
        assert!(psnr(&picture.y, &y) > 25.0, "frame {n}");
        decoded += 1;
    }
    assert!(decoded >= 25, "{decoded} of 30 decoded");
}

#[test]
fn a_keyframe_comes_when_asked_for() {
    let mut enc = encoder(160, 96, 300_000);
    let mut keyframes = Vec::new();
    for n in 0..20 {
        if let Some(frame) = encode(&mut enc, n, n == 12)
            && frame.keyframe
        {
            keyframes.push(n);
        }
    }
    assert_eq!(keyframes, vec![0, 12]);
}

#[test]
fn the_bitrate_changes_mid_stream() {
    let mut enc = encoder(320, 180, 1_000_000);
    let size = |enc: &mut H264Encoder, from: u32| -> usize {
        (from..from + 60)
            .filter_map(|n| encode(enc, n, false))
            .map(|f| f.data.len())
            .sum()
    };
    let high = size(&mut enc, 0);
    enc.set_bitrate(100_000).unwrap();
    let _settle = size(&mut enc, 60);
    let low = size(&mut enc, 120);
    assert_eq!(enc.bitrate_bps(), 100_000);
    assert!(low * 2 < high, "{low} bytes at 100k vs {high} at 1M");
}

#[test]
fn corrupt_and_partial_input_is_an_error_or_nothing_never_a_panic() {
    let mut enc = encoder(320, 180, 500_000);
    let mut dec = H264Decoder::new().unwrap();
    let first = encode(&mut enc, 0, false).unwrap();
    let second = encode(&mut enc, 1, false).unwrap();
    // A stream that starts without a keyframe: no picture.
    let mut fresh = H264Decoder::new().unwrap();
    assert!(!matches!(fresh.decode(&second.data), Ok(Some(_))));
    assert!(dec.decode(&[]).is_err());
    for garbage in [
        vec![0u8, 0, 0, 1, 0x65, 0xff, 0xff, 0xff],
        vec![0xde, 0xad, 0xbe, 0xef],
        first.data[..first.data.len() / 3].to_vec(),
        first.data.iter().map(|b| b ^ 0x5a).collect(),
    ] {
        let _ = dec.decode(&garbage);
    }
    // And it decodes the next keyframe after all that.
    let key = encode(&mut enc, 2, true).unwrap();
    assert!(key.keyframe);
    let mut decoded = dec.decode(&key.data);
    if matches!(decoded, Ok(None)) {
        decoded = dec.decode(&encode(&mut enc, 3, false).unwrap().data);
    }
    assert!(matches!(decoded, Ok(Some(_))), "{decoded:?}");
}

#[test]
fn bad_pictures_and_settings_are_refused() {
    assert!(
        H264Encoder::new(EncoderConfig {
            width: 320,
            height: 180,
            fps: 0,
            bitrate_bps: 1
        })
        .is_err()
    );
    let mut enc = encoder(320, 180, 500_000);
    let y = vec![0u8; 100];
    let yuv = Yuv {
        width: 320,
        height: 180,
        y: &y,
        u: &y,
        v: &y,
        y_stride: 320,
        uv_stride: 160,
    };
    assert!(matches!(
        enc.encode(&yuv, false),
        Err(H264Error::InvalidInput(_))
    ));
}

#[test]
fn nal_units_split_on_three_and_four_byte_start_codes() {
    let data = [
        0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
    ];
    let units = nal_units(&data);
    assert_eq!(
        units,
        vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]
    );
    assert!(is_keyframe(&data));
    assert!(!is_keyframe(&data[..14]));
    assert!(nal_units(&[1, 2, 3]).is_empty());
}
