from django.urls import path

from . import views

urlpatterns = [
    path("chain/<int:hops>/", views.chain, name="chain"),
    path("cookies/", views.cookies),
    path("upload/", views.upload),
    path("stream/", views.stream),
    path("absolute/", views.absolute),
]
