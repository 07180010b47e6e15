"""``run(cfg)``: serve the page of one checkpoint (``demo.py``).

It listens on ``host`` (127.0.0.1: this machine only) at ``port``; Gradio's public share link is
made only with ``share=true``. Options and the checkpoint are checked before anything is served.
"""

from __future__ import annotations

import logging
import os

from omegaconf import DictConfig, OmegaConf

from lesion.demo.classify import load_page_model
from lesion.errors import LesionError
from lesion.options import check_demo

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def run(cfg: DictConfig) -> None:
    """Serve the page until interrupted."""
    check_demo(OmegaConf.to_container(cfg, resolve=True))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    try:
        from lesion.demo.page import build_page
    except ImportError as error:
        raise LesionError("demo.py", f"needs the package {error.name}, which is not installed",
                          'pip install "lesion[demo]"') from None
    model = load_page_model(cfg.ckpt, cfg.gradcam.layer, cfg.trust_checkpoint, cfg.device)
    if cfg.host not in LOCAL_HOSTS:
        log.warning("host=%s: the page is reachable from other machines on this network", cfg.host)
    if cfg.share:
        log.warning("share=true: Gradio makes a public link; anyone with it can use the model")
    page = build_page(model)
    try:
        # Gradio's own startup lines are quiet: their advice names launch()'s arguments, not demo.py's options.
        _, url, _ = page.launch(server_name=cfg.host, server_port=cfg.port, share=cfg.share, show_error=False,
                                max_file_size=cfg.max_file_size, quiet=True, prevent_thread_lock=True)
    except OSError as error:
        raise LesionError("host, port", f"{cfg.host}:{cfg.port} cannot be served ({error})",
                          "pass another port=N (or stop what uses it), or a host name of this machine") from None
    log.info("Running on local URL: %s", url.rstrip("/"))
    if not cfg.share:
        log.info("share=true would also make a public link (anyone with it could use the model)")
    page.block_thread()
