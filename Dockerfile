# Freqtrade's official image with this plugin installed. Used by docker-compose.yml.
# The tag must equal the freqtrade pin in pyproject.toml (tests/test_docker_files.py checks it).
FROM freqtradeorg/freqtrade:2026.9

# The official image runs as ftuser: Freqtrade lives in /freqtrade, Python packages in
# /home/ftuser/.local (the documented way to add one is `pip install --user`).
USER ftuser
WORKDIR /freqtrade

# Build from a scratch directory: /freqtrade holds Freqtrade's own source and pyproject.toml.
# README.md goes along because pyproject.toml names it (setuptools warns without it).
COPY --chown=ftuser:ftuser pyproject.toml README.md /home/ftuser/llm-oracle-src/
COPY --chown=ftuser:ftuser llm_oracle /home/ftuser/llm-oracle-src/llm_oracle
COPY --chown=ftuser:ftuser bybit_emulator /home/ftuser/llm-oracle-src/bybit_emulator

# 1. This package with pyproject.toml's dependencies, constrained to every version already in
#    the image: Freqtrade and all it brought stay as they are (the image's freqtrade 2026.9
#    satisfies the pin, extras included), only what is missing is added (google-genai, plotly
#    for the plot extra, and their own dependencies), or the build fails loudly.
# 2. Fail the build here, not at the first candle, if an import is broken.
RUN pip list --format=freeze > /home/ftuser/image-constraints.txt \
    && pip install --user --no-cache-dir --constraint /home/ftuser/image-constraints.txt \
        /home/ftuser/llm-oracle-src \
    && rm -rf /home/ftuser/llm-oracle-src /home/ftuser/image-constraints.txt \
    && python -c "import google.genai, llm_oracle.oracle, pandas_ta, talib"

# The strategy and the shipped config (dry run). docker-compose.yml mounts ./config.json over
# this copy read-only, so a config change needs a restart, not a rebuild.
COPY --chown=ftuser:ftuser strategies/ /freqtrade/strategies/
COPY --chown=ftuser:ftuser config.json /freqtrade/config.json

# ENTRYPOINT stays the image's ["freqtrade"]; docker-compose.yml gives the `trade` command.
