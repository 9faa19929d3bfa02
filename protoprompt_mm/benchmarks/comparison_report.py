"""The printed report of :func:`~.model_comparison.run_benchmark`."""
from protoprompt_mm.benchmarks.model_building import ROLES
from protoprompt_mm.benchmarks.timing import PHASES


def fmt(stats: dict) -> str:
    """``12.3 img/s (median 0.650 s, p25-p75 0.640-0.700 s)``."""
    return (f'{stats["images_per_s"]:8.2f} img/s (median '
            f'{stats["median_s"]:.3f} s, p25-p75 {stats["p25_s"]:.3f}-'
            f'{stats["p75_s"]:.3f} s)')


def format_report(results: dict) -> str:
    """The figures as text, beginning with an empty line.

    Args:
        results: :func:`~.model_comparison.run_benchmark`'s dict.

    Returns:
        str: The setup, then per phase the two models' throughputs and
        their time ratio; peak memory, the component breakdown and the
        pseudo-mask TTA when ``results`` has them.
    """
    setup = results['setup']
    wrappers = ', '.join(f'{role} {name}'
                         for role, name in setup['optim_wrapper'].items())
    lines = [f'\n== {setup["size"]}x{setup["size"]}, batch {setup["batch"]}, '
             f'{setup["iters"]} timed iters (+{setup["warmup"]} warm-up), '
             f'device {setup["device"]}, {setup["threads"]} torch threads; '
             f'optim wrappers: {wrappers}']
    for phase in PHASES:
        lines.append(f'-- {phase} step')
        for role in ROLES:
            lines.append(f'  {role:<12}{fmt(results[phase][role])}')
        cmp = results[phase]['ratio']
        lines.append(f'  time ratio protoprompt/baseline {cmp["ratio"]:.3f} '
                     f'(overhead {cmp["overhead_pct"]:+.1f}%)')
    if 'memory' in results:
        lines.append(f'-- peak memory ({results["memory"]["method"]})')
        for phase in PHASES:
            mem = results['memory'][phase]
            lines.append(
                f'  {phase}: protoprompt '
                f'{mem["protoprompt"]["step_peak_mib"]:.0f} MiB, baseline '
                f'{mem["baseline"]["step_peak_mib"]:.0f} MiB, ratio '
                f'{mem["ratio"]["ratio"]:.3f} '
                f'({mem["ratio"]["overhead_pct"]:+.1f}%); peak RSS '
                f'{mem["protoprompt"]["peak_mib"]:.0f} / '
                f'{mem["baseline"]["peak_mib"]:.0f} MiB')
    if 'breakdown' in results:
        lines.append(
            '-- training-step components, median ms (forward + backward)')
        for role, parts in results['breakdown'].items():
            for name, stats in parts.items():
                lines.append(f'  {role:<12}{name:<34}'
                             f'{1000 * stats["median_s"]:9.1f}')
    if 'pseudo_masks' in results:
        pm = results['pseudo_masks']
        lines.append(f'-- pseudo-mask TTA, {pm["num_views"]} views '
                     f'(scales {pm["scales"]}, flip {pm["flip"]})')
        lines.append(f'  CAMSegmentor.inference  {fmt(pm["tta"])}')
        lines.append(f'  plain forwards of views {fmt(pm["views_plain"])}')
        lines.append(f'  ratio TTA / views {pm["ratio_vs_views"]:.3f}; TTA / '
                     f'(views x plain forward at scale 1) '
                     f'{pm["ratio_vs_views_x_single"]:.3f}')
    return '\n'.join(lines)
