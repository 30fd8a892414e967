"""PSPNet's pyramid pooling drawn on a real feature map: the image, the map, and its 1/2/3/6-bin averages with bin edges."""

from matplotlib.figure import Figure

__all__ = ["plot_pyramid_bins"]


def plot_pyramid_bins(image, views: dict) -> Figure:
    """One row: image | channel-mean feature map | one panel per bin count with the bin edges in white.

    `views`: segkit.models.pspnet.pyramid_views(model, image) ({"features", "channels", "pooled"}).
    """
    features, pooled = views["features"], views["pooled"]
    height, width = features.shape
    fig = Figure(figsize=(14, 2.6), layout="constrained")
    axes = fig.subplots(1, 2 + len(pooled))
    axes[0].imshow(image)
    axes[0].set_title(f"image {image.shape[1]}x{image.shape[0]}", fontsize=9)
    axes[1].imshow(features, cmap="magma")
    axes[1].set_title(f"stage-{views.get('stage', 4)} features {width}x{height}x{views['channels']}\n(channel mean)", fontsize=9)
    for ax, (bins, (grid, row_starts, col_starts)) in zip(axes[2:], pooled.items()):
        ax.imshow(grid, cmap="magma", extent=(0, width, height, 0), vmin=features.min(), vmax=features.max())
        for start in row_starts[1:]:
            ax.axhline(start, color="white", linewidth=0.8)
        for start in col_starts[1:]:
            ax.axvline(start, color="white", linewidth=0.8)
        ax.set_title(f"{bins}x{bins} bins", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    return fig
