"Package metadata comes from settings.ini (the nbdev 2 convention), so there is one place to edit it."
import shlex
from configparser import ConfigParser

import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

for key in 'version description keywords author author_email license min_python lib_name git_url user'.split():
    assert key in cfg, f'settings.ini is missing `{key}`'

licenses = {
    'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License'),
    'mit': ('MIT License', 'OSI Approved :: MIT License'),
}
statuses = ['Planning', 'Pre-Alpha', 'Alpha', 'Beta', 'Production/Stable', 'Mature', 'Inactive']
lic = licenses.get(cfg['license'].lower(), (cfg['license'], None))

requirements = shlex.split(cfg.get('requirements', ''))
dev_requirements = shlex.split(cfg.get('dev_requirements', ''))
console_scripts = [s.strip() for s in cfg.get('console_scripts', '').splitlines() if s.strip()]

with open('README.md', encoding='utf-8') as f:
    long_description = f.read()

setuptools.setup(
    name=cfg['repo'],
    license=lic[0],
    classifiers=[
        'Development Status :: ' + str(cfg['status']) + ' - ' + statuses[int(cfg['status'])],
        'Intended Audience :: ' + cfg['audience'].title(),
        'Natural Language :: ' + cfg['language'].title(),
        'Programming Language :: Python :: 3.11',
    ] + (['License :: ' + lic[1]] if lic[1] else []),
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=[cfg['lib_name'], cfg['lib_name'] + '.*']),
    include_package_data=True,
    install_requires=requirements,
    extras_require={'dev': dev_requirements},
    python_requires='>=' + cfg['min_python'],
    long_description=long_description,
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={
        'console_scripts': console_scripts,
        'nbdev': [f'{cfg["lib_path"]}={cfg["lib_path"]}._modidx:d'],
    },
    version=cfg['version'],
    description=cfg['description'],
    keywords=cfg['keywords'],
    author=cfg['author'],
    author_email=cfg['author_email'],
)
