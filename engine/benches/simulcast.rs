//! Three-layer VP8 simulcast of a 360p source, encoded two ways: libvpx's
//! multi-resolution encoder (one call encodes all layers, the lower ones reusing the top
//! layer's motion search) and one independent encoder per layer. Both give per-layer
//! keyframes. One iteration encodes one second of the test pattern (30 pictures, already
//! scaled to 640x360, 320x180 and 160x90, at the engine's layer bitrates), so its time is
//! the share of one core that simulcast costs a sender. Before the timed runs, each way's
//! bytes and PSNR per layer over the same second are printed, so that the cheaper one is
//! not cheaper by coding worse.
//!
//! `cargo bench -p sotto-engine --bench simulcast`; results in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sotto_engine::call::video::{plan_layers, simulcast_layers};
use sotto_engine::video::VideoFrame;
use sotto_engine::video::pattern::render;
use sotto_engine::video::quality::score;
use sotto_engine::video::scale::Scaler;
use sotto_vpx::{EncoderConfig, SimulcastEncoder, SimulcastLayer, Vp8Decoder, Vp8Encoder};

const FPS: u32 = 30;

/// One second of pictures, each as its layers (largest first, as libvpx takes them).
fn pictures() -> Vec<Vec<VideoFrame>> {
    let plan = plan_layers(640, 360, 3);
    let mut scaler = Scaler::default();
    (0..u64::from(FPS))
        .map(|i| {
            let source = render(640, 360, i, i * 33);
            plan.iter()
                .rev()
                .map(|l| scaler.scale(&source, l.width, l.height).expect("scale"))
                .collect()
        })
        .collect()
}

/// The layers and their bitrates, largest first.
fn layers() -> Vec<SimulcastLayer> {
    simulcast_layers(&plan_layers(640, 360, 3))
}

fn config(layer: &SimulcastLayer) -> EncoderConfig {
    EncoderConfig {
        frame_dropping: true,
        ..EncoderConfig::realtime(layer.width, layer.height, FPS, layer.bitrate_bps)
    }
}

struct MultiRes {
    encoder: SimulcastEncoder,
    pts: i64,
}

impl MultiRes {
    fn new() -> MultiRes {
        let layers = layers();
        let base = config(&layers[0]);
        MultiRes {
            encoder: SimulcastEncoder::new(layers, base).expect("multi-resolution encoder"),
            pts: 0,
        }
    }

    /// Encodes one picture's layers; the frames per layer.
    fn encode(&mut self, picture: &[VideoFrame]) -> Vec<Vec<Vec<u8>>> {
        let views: Vec<_> = picture.iter().map(VideoFrame::as_i420).collect();
        let keyframes = vec![self.pts == 0; views.len()];
        let out = self
            .encoder
            .encode(&views, self.pts, &keyframes)
            .expect("encode");
        self.pts += i64::from(90_000 / FPS);
        out.into_iter()
            .map(|frames| frames.into_iter().map(|f| f.data).collect())
            .collect()
    }
}

struct PerLayer {
    encoders: Vec<Vp8Encoder>,
    pts: i64,
}

impl PerLayer {
    fn new() -> PerLayer {
        PerLayer {
            encoders: layers()
                .iter()
                .map(|l| Vp8Encoder::new(config(l)).expect("encoder"))
                .collect(),
            pts: 0,
        }
    }

    fn encode(&mut self, picture: &[VideoFrame]) -> Vec<Vec<Vec<u8>>> {
        let keyframe = self.pts == 0;
        let out = self
            .encoders
            .iter_mut()
            .zip(picture)
            .map(|(encoder, layer)| {
                encoder
                    .encode(&layer.as_i420(), self.pts, keyframe)
                    .expect("encode")
                    .into_iter()
                    .map(|f| f.data)
                    .collect()
            })
            .collect();
        self.pts += i64::from(90_000 / FPS);
        out
    }
}

/// Kilobytes and mean luma PSNR per layer over one second, largest first.
fn report(name: &str, mut encode: impl FnMut(&[VideoFrame]) -> Vec<Vec<Vec<u8>>>) {
    let pictures = pictures();
    let layers = pictures[0].len();
    let mut decoders: Vec<Vp8Decoder> = (0..layers)
        .map(|_| Vp8Decoder::new(1).expect("decoder"))
        .collect();
    let mut bytes = vec![0usize; layers];
    let mut psnr = vec![(0.0f64, 0u32); layers];
    for picture in &pictures {
        for (layer, frames) in encode(picture).into_iter().enumerate() {
            for frame in frames {
                bytes[layer] += frame.len();
                if let Ok(Some(decoded)) = decoders[layer].decode(&frame) {
                    let decoded = VideoFrame::from_decoded(decoded);
                    if let Ok(s) = score(&picture[layer], &decoded) {
                        psnr[layer].0 += s.psnr_y;
                        psnr[layer].1 += 1;
                    }
                }
            }
        }
    }
    let summary: Vec<String> = (0..layers)
        .map(|l| {
            let (width, height) = (pictures[0][l].width, pictures[0][l].height);
            format!(
                "{width}x{height}: {:.1} kB, {} frames, PSNR-Y {:.2} dB",
                bytes[l] as f64 / 1000.0,
                psnr[l].1,
                psnr[l].0 / f64::from(psnr[l].1.max(1))
            )
        })
        .collect();
    eprintln!("{name} over one second: {}", summary.join("; "));
}

fn simulcast(c: &mut Criterion) {
    let mut multi = MultiRes::new();
    report("multi-resolution", |p| multi.encode(p));
    let mut per_layer = PerLayer::new();
    report("per-layer", |p| per_layer.encode(p));

    let pictures = pictures();
    let mut group = c.benchmark_group("vp8_simulcast_360p_1s");
    group.sample_size(20);
    group.throughput(Throughput::Elements(pictures.len() as u64));
    let mut multi = MultiRes::new();
    group.bench_function("multi_resolution", |b| {
        b.iter(|| {
            for picture in &pictures {
                black_box(multi.encode(picture));
            }
        });
    });
    let mut per_layer = PerLayer::new();
    group.bench_function("per_layer", |b| {
        b.iter(|| {
            for picture in &pictures {
                black_box(per_layer.encode(picture));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, simulcast);
criterion_main!(benches);
