/**
 * Splines benchmark: change-point detection (analysis/changepoints.ts) on synthetic loss
 * curves with known jumps and slope changes, noise and single-step spikes, over several seeds;
 * plus the same curves with the events removed (false alarms). Prints one JSON line per seed
 * and a summary line. `node dist/scripts/bench/splines.js [seeds] [steps]`.
 */
import { detectChanges } from '../../analysis/changepoints';
import { makeCurve, randomSpec, scoreDetections } from '../../analysis/synthetic';

function main(): void {
  const seeds = Number(process.argv[2] ?? 10);
  const steps = Number(process.argv[3] ?? 2000);
  let f1 = 0;
  let kindFreeF1 = 0;
  let falseAlarms = 0;
  let cleanAlarms = 0;
  let spikeReports = 0;
  let seconds = 0;
  for (let seed = 1; seed <= seeds; seed++) {
    const spec = randomSpec(seed, { steps });
    const window = 0.01 * steps;
    const curve = makeCurve(spec, seed);
    let t0 = Date.now();
    const found = detectChanges(curve.steps, curve.loss, { seed }).changes;
    const s1 = (Date.now() - t0) / 1000;
    const clean = makeCurve({ ...spec, events: [] }, seed);
    t0 = Date.now();
    const cleanFound = detectChanges(clean.steps, clean.loss, { seed }).changes;
    const s2 = (Date.now() - t0) / 1000;
    const sc = scoreDetections(spec.events, found, window);
    const loose = scoreDetections(spec.events, found, window, false);
    const spikes = [...found, ...cleanFound].filter((d) => spec.spikes.some((s) => Math.abs(s - d.step) <= window)).length;
    f1 += sc.f1;
    kindFreeF1 += loose.f1;
    falseAlarms += sc.falsePositives;
    cleanAlarms += cleanFound.length;
    spikeReports += spikes;
    seconds += s1 + s2;
    process.stdout.write(
      JSON.stringify({
        bench: 'splines',
        seed,
        steps,
        events: spec.events.length,
        f1: sc.f1,
        f1_any_kind: loose.f1,
        false_alarms: sc.falsePositives,
        missed: sc.falseNegatives,
        clean_false_alarms: cleanFound.length,
        spike_reports: spikes,
        seconds_per_curve: (s1 + s2) / 2,
      }) + '\n',
    );
  }
  process.stdout.write(
    JSON.stringify({
      bench: 'splines',
      seed: 'mean',
      steps,
      curves: seeds,
      f1: f1 / seeds,
      f1_any_kind: kindFreeF1 / seeds,
      false_alarms_per_curve: falseAlarms / seeds,
      clean_false_alarms_per_curve: cleanAlarms / seeds,
      spike_reports: spikeReports,
      seconds_per_curve: seconds / (2 * seeds),
    }) + '\n',
  );
}

main();
